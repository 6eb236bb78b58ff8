"""Triangle meshes and the surface materials the mesh renderer draws.

Conventions
-----------
* Faces are wound counter-clockwise when seen from outside: the front side of a face is the one
  from which ``v0 -> v1 -> v2`` turns counter-clockwise, and ``(v1 - v0) x (v2 - v0)`` points out.
* UV coordinates are in ``[0, 1]`` with ``v = 0`` at the BOTTOM of the texture image and ``v = 1``
  at its top, as in OBJ files. Texture images are stored top-down (row 0 is the top row, like any
  image file), so texel row ``r`` of an ``h``-row map is centred at ``v = 1 - (r + 0.5) / h`` and
  column ``c`` at ``u = (c + 0.5) / w``. Every texture lookup in :mod:`headgen.render` follows this.
* Tangent-space normal maps are OpenGL style ("green up"): the tangent points along +u, the
  bitangent along +v (up in the texture image), and the map stores ``(n + 1) / 2`` so a flat
  texel is ``(0.5, 0.5, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.gather import take


@dataclass
class Mesh:
    """A triangle mesh with optional UVs (which may be indexed separately, for seams)."""

    v_pos: Tensor
    """[V,3] float vertex positions."""
    t_pos_idx: Tensor
    """[F,3] long vertex indices per face, counter-clockwise seen from outside."""
    v_tex: Tensor | None = None
    """[T,2] UV coordinates in [0,1] (v = 0 at the bottom of the image), or None."""
    t_tex_idx: Tensor | None = None
    """[F,3] long UV indices per face; None means the UVs share the position indices (T == V)."""

    def __post_init__(self) -> None:
        if self.v_pos.dim() != 2 or self.v_pos.shape[-1] != 3:
            raise HeadgenError(f"Mesh.v_pos must be [V,3], got {tuple(self.v_pos.shape)}")
        if self.t_pos_idx.dim() != 2 or self.t_pos_idx.shape[-1] != 3:
            raise HeadgenError(f"Mesh.t_pos_idx must be [F,3], got {tuple(self.t_pos_idx.shape)}")
        if self.t_pos_idx.dtype.is_floating_point:
            raise HeadgenError("Mesh.t_pos_idx must be an integer tensor")
        if self.v_tex is not None:
            if self.v_tex.dim() != 2 or self.v_tex.shape[-1] != 2:
                raise HeadgenError(f"Mesh.v_tex must be [T,2], got {tuple(self.v_tex.shape)}")
            if self.t_tex_idx is None and self.v_tex.shape[0] != self.v_pos.shape[0]:
                raise HeadgenError(
                    f"Mesh.v_tex has {self.v_tex.shape[0]} UVs but there are {self.v_pos.shape[0]} "
                    "vertices; give t_tex_idx [F,3] when UVs are indexed separately"
                )
        if self.t_tex_idx is not None:
            if self.v_tex is None:
                raise HeadgenError("Mesh.t_tex_idx is set but v_tex is None")
            if tuple(self.t_tex_idx.shape) != tuple(self.t_pos_idx.shape):
                raise HeadgenError(
                    f"Mesh.t_tex_idx {tuple(self.t_tex_idx.shape)} must match t_pos_idx {tuple(self.t_pos_idx.shape)}"
                )

    # ------------------------------------------------------------------ basics
    @property
    def num_vertices(self) -> int:
        return self.v_pos.shape[0]

    @property
    def num_faces(self) -> int:
        return self.t_pos_idx.shape[0]

    @property
    def has_uv(self) -> bool:
        return self.v_tex is not None

    @property
    def uv_idx(self) -> Tensor:
        """[F,3] indices into ``v_tex`` (and into :meth:`vertex_tangents`)."""
        if self.v_tex is None:
            raise HeadgenError("this mesh has no UVs (v_tex is None)")
        return self.t_tex_idx if self.t_tex_idx is not None else self.t_pos_idx

    def to(self, device: torch.device | str) -> Mesh:
        return Mesh(
            self.v_pos.to(device),
            self.t_pos_idx.to(device),
            None if self.v_tex is None else self.v_tex.to(device),
            None if self.t_tex_idx is None else self.t_tex_idx.to(device),
        )

    def with_positions(self, v_pos: Tensor) -> Mesh:
        """A copy with new vertex positions (same topology and UVs), e.g. a deformed head."""
        if tuple(v_pos.shape) != tuple(self.v_pos.shape):
            raise HeadgenError(f"with_positions: expected {tuple(self.v_pos.shape)}, got {tuple(v_pos.shape)}")
        return replace(self, v_pos=v_pos)

    # ------------------------------------------------------------------ normals
    def _face_cross(self) -> Tensor:
        v = take(self.v_pos, self.t_pos_idx)
        # Length is twice the face area, so summing these weights normals by area.
        return torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)

    def face_normals(self) -> Tensor:
        """[F,3] unit face normals (outward for counter-clockwise front faces)."""
        return F.normalize(self._face_cross(), dim=-1, eps=1e-20)

    def vertex_normals(self) -> Tensor:
        """[V,3] area-weighted unit vertex normals; zero for vertices used by no face."""
        fn = self._face_cross()
        idx = self.t_pos_idx.long().reshape(-1)
        vn = torch.zeros_like(self.v_pos).index_add(0, idx, fn.repeat_interleave(3, dim=0))
        return F.normalize(vn, dim=-1, eps=1e-20)

    # ------------------------------------------------------------------ tangents
    def vertex_tangents(self) -> Tensor:
        """[T,4] per-UV-vertex tangents: xyz unit tangent along +u, w = handedness (+-1).

        Indexed like ``v_tex`` (use :attr:`uv_idx`), so the two sides of a UV seam keep their own
        tangent frames. Per-face tangents are accumulated with area weights, made orthogonal to
        the (area-weighted) vertex normal, and the bitangent is ``w * cross(n, t)``, which points
        along +v.
        """
        if self.v_tex is None:
            raise HeadgenError("vertex_tangents needs UVs (v_tex)")
        tri = self.t_pos_idx.long()
        uvi = self.uv_idx.long()
        p = take(self.v_pos, tri)
        uv = self.v_tex[uvi].to(p.dtype)
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
        det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
        ok = det.abs() > 1e-20
        inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
        t_face = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv[:, None]
        b_face = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv[:, None]
        area = 0.5 * torch.cross(e1, e2, dim=-1).norm(dim=-1, keepdim=True)
        t_face = F.normalize(t_face, dim=-1, eps=1e-20) * area
        b_face = F.normalize(b_face, dim=-1, eps=1e-20) * area

        n_uv = self.v_tex.shape[0]
        flat = uvi.reshape(-1)
        zeros = torch.zeros(n_uv, 3, dtype=p.dtype, device=p.device)
        t_acc = zeros.index_add(0, flat, t_face.repeat_interleave(3, dim=0))
        b_acc = zeros.index_add(0, flat, b_face.repeat_interleave(3, dim=0))
        # The normal at a UV vertex is that of the position vertex it belongs to.
        vn = self.vertex_normals()
        n_acc = zeros.index_add(0, flat, take(vn, tri.reshape(-1)))
        n = F.normalize(n_acc, dim=-1, eps=1e-20)

        t = t_acc - (t_acc * n).sum(-1, keepdim=True) * n
        t = F.normalize(t, dim=-1, eps=1e-20)
        w = torch.where((torch.cross(n, t, dim=-1) * b_acc).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        return torch.cat([t, w.to(t.dtype)], dim=-1)


@dataclass
class SurfaceGeometry:
    """What the mesh renderer draws: a :class:`Mesh` plus optional materials.

    Albedo comes from the first of ``albedo_map`` (needs UVs), ``v_color``, ``albedo_fn``,
    ``base_color`` that is set. ``normal_map`` and ``latent_map`` need UVs.

    ``parts`` are further surfaces with their own materials (e.g. DreamFace's hair, a constant
    colour, next to the UV-textured head) drawn in the same depth buffer, so each occludes the
    others where it is in front. Exporters write them as separate meshes/materials; a part has
    no parts of its own.
    """

    mesh: Mesh
    albedo_map: Tensor | None = None
    """[h,w,3] UV texture in [0,1], row 0 = top (v = 1)."""
    normal_map: Tensor | None = None
    """[h,w,3] tangent-space normal map in [0,1] encoding; (0.5, 0.5, 1) is flat."""
    latent_map: Tensor | None = None
    """[C,h,w] latent texture (e.g. 4x64x64) for latent-space rendering."""
    albedo_fn: Callable[[Tensor], Tensor] | None = None
    """A colour field: world points [N,3] -> albedo [N,3] (used by DMTet)."""
    v_color: Tensor | None = None
    """[V,3] per-vertex albedo in [0,1]."""
    specular_map: Tensor | None = None
    """[h,w,1 or 3] specular intensity in [0,1] (exported as a PBR map; the renderer does not use it)."""
    base_color: Tensor | None = None
    """[3] constant albedo in [0,1] (e.g. hair in a preset colour)."""
    name: str = ""
    """What the surface is ("hair", ...): names exported files, meshes and materials of parts."""
    parts: list[SurfaceGeometry] = field(default_factory=list)
    """Further surfaces drawn together with this one (one depth buffer, each its own material)."""
    roughness: float | None = None
    """Constant PBR roughness of this surface's material (None: the exporter's default)."""
    alpha: float = 1.0
    """Opacity of a part's material: below 1 it is an alpha-blended overlay, which exporters write
    with alpha blending and the (single-layer, opaque) renderer does not draw."""
    base_latent: Tensor | None = None
    """[C] constant latent of a part in latent-mode renders (its colour as the guidance's VAE encodes it)."""
    morph_deltas: Tensor | None = None
    """[E,V,3] a part's share of the main surface's expression blendshapes (same names and order):
    the part moves with the expressions (ICT-FaceKit's eyes and teeth) in videos and head.glb."""

    def __post_init__(self) -> None:
        if self.base_color is not None and tuple(self.base_color.shape) != (3,):
            raise HeadgenError(f"SurfaceGeometry.base_color must be [3], got {tuple(self.base_color.shape)}")
        for part in self.parts:
            if not isinstance(part, SurfaceGeometry):
                raise HeadgenError(f"SurfaceGeometry.parts must hold SurfaceGeometry, got {type(part).__name__}")
            if part.parts:
                raise HeadgenError("SurfaceGeometry.parts: a part cannot have parts of its own")

    def surfaces(self) -> list[SurfaceGeometry]:
        """This surface (without its parts) followed by its parts."""
        return [replace(self, parts=[]), *self.parts] if self.parts else [self]

    def to(self, device: torch.device | str) -> SurfaceGeometry:
        def mv(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device)

        here, there = self.mesh.v_pos.device, torch.device(device)
        same = here.type == there.type and None in (here.index, there.index) or here == there
        if self.albedo_fn is not None and not same:
            # The colour field is a function of its module, which stays where it is: move the module
            # (the representation) instead of its surface.
            raise HeadgenError(
                f"SurfaceGeometry.to({device}): the surface's colour is a field on {self.mesh.v_pos.device}; move "
                "the representation to that device before taking its surface"
            )

        return SurfaceGeometry(
            self.mesh.to(device),
            mv(self.albedo_map),
            mv(self.normal_map),
            mv(self.latent_map),
            self.albedo_fn,
            mv(self.v_color),
            mv(self.specular_map),
            mv(self.base_color),
            self.name,
            [p.to(device) for p in self.parts],
            self.roughness,
            self.alpha,
            mv(self.base_latent),
            mv(self.morph_deltas),
        )


def concat_meshes(meshes: list[Mesh]) -> tuple[Mesh, Tensor]:
    """One mesh holding ``meshes`` (vertices and faces appended in order) and the [F] index of the
    mesh each face came from. When some meshes have UVs, those without get one extra UV (0, 0)
    that all their face corners use, so the result has UVs for every face."""
    if not meshes:
        raise HeadgenError("concat_meshes needs at least one mesh")
    dev = meshes[0].v_pos.device
    pos, tri, owner, offset = [], [], [], 0
    for i, m in enumerate(meshes):
        pos.append(m.v_pos)
        tri.append(m.t_pos_idx.long().to(dev) + offset)
        owner.append(torch.full((m.num_faces,), i, dtype=torch.long, device=dev))
        offset += m.num_vertices
    v_tex = t_tex = None
    if any(m.v_tex is not None for m in meshes):
        dtype = next(m.v_tex.dtype for m in meshes if m.v_tex is not None)
        uvs, uv_tri, uv_off = [], [], 0
        for m in meshes:
            if m.v_tex is None:
                uvs.append(torch.zeros(1, 2, dtype=dtype, device=dev))
                uv_tri.append(torch.full((m.num_faces, 3), uv_off, dtype=torch.long, device=dev))
                uv_off += 1
            else:
                uvs.append(m.v_tex.to(dev, dtype))
                uv_tri.append(m.uv_idx.long().to(dev) + uv_off)
                uv_off += m.v_tex.shape[0]
        v_tex, t_tex = torch.cat(uvs), torch.cat(uv_tri)
    return Mesh(torch.cat(pos), torch.cat(tri), v_tex, t_tex), torch.cat(owner)


__all__ = ["Mesh", "SurfaceGeometry", "concat_meshes"]
