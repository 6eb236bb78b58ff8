"""The mesh renderer: rasterize a :class:`SurfaceGeometry` into the images guidance needs.

Modes (all images ``[B, H, W, C]``, row 0 at the top):

* ``rgb`` [3]: ``albedo * (ambient + color * max(0, n . l))`` under the batch's directional light,
  clamped to [0, 1] and composited over the background. ``n`` is the interpolated vertex normal,
  perturbed by the tangent-space ``normal_map`` when one is given.
* ``albedo`` [3]: the albedo, composited over the background.
* ``shading`` [3]: the same Lambert term on a uniform grey albedo (``shading_albedo``).
* ``normal`` [3]: unit normals (world or camera space, see ``normal_space``) mapped to
  ``(n + 1) / 2`` and premultiplied by coverage, i.e. the background is 0 (black).
* ``normal_opacity`` [4]: ``[n * coverage, coverage]`` with the same normals, i.e. the premultiplied
  normal image mapped back to [-1, 1] next to the opacity (HeadArtist's early-geometry "latent",
  guided at latent resolution without the VAE).
* ``opacity`` [1]: coverage (antialiased, so silhouettes carry gradients).
* ``depth`` [1]: camera-space depth (the clip ``w``, distance along the view axis); 0 on the
  background; not antialiased.
* ``latent`` [C]: ``latent_map`` sampled by UV, over a random per-image background drawn from
  ``generator`` (standard normal), for latent-space SDS.
* ``uv`` [2]: the interpolated texture coordinates; 0 on the background; not antialiased.

Albedo comes from the first of ``albedo_map`` (by UV), ``v_color``, ``albedo_fn``, ``base_color``
that is set; ``rgb``/``albedo`` without any of them is an error (render ``shading`` for bare geometry).

Several surfaces (``SurfaceGeometry.parts``, e.g. a head and its hair) are rasterised as one
concatenated mesh, so they share the depth buffer; each covered pixel is shaded with the material
(albedo, normal map) of the surface its triangle belongs to. ``uv`` is 0 on surfaces without UVs;
in ``latent`` renders every part needs a ``base_latent`` (its constant latent). Parts with
``alpha`` below 1 (alpha-blended overlays) are not drawn: one depth layer cannot blend them.

With ``antialias: true``, ``rgb``, ``albedo``, ``shading``, ``normal``, ``normal_opacity``, ``latent`` and ``opacity``
go through the backend's antialias op after compositing, which gives silhouettes position
gradients.

Both faces of every triangle are drawn (unless ``cull_backfaces``) and normals are not flipped
toward the viewer, so the inside of an open mesh seen from behind shades as facing away. Images
are ``resolution`` pixels high; the projection uses the cameras' field of view and aspect ratio,
not their pixel size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.cameras import Cameras, Lights
from headgen.errors import HeadgenError, did_you_mean
from headgen.gather import take
from headgen.geometry.mesh import Mesh, SurfaceGeometry, concat_meshes
from headgen.registry import register
from headgen.render.raster import RasterBackend, get_backend

MODES: tuple[str, ...] = ("rgb", "albedo", "shading", "normal", "normal_opacity", "opacity", "depth", "latent", "uv")
_ANTIALIASED = ("rgb", "albedo", "shading", "normal", "normal_opacity", "latent", "opacity")


class _Packed:
    """The covered pixels of a render as a [1, 1, N, 4] rast, shaded with the backend's ops."""

    def __init__(self, backend: RasterBackend, rast: Tensor, n: int) -> None:
        self.backend, self.rast, self.n = backend, rast, n
        self.tri_id = rast.detach().reshape(n, 4)[:, 3].long() - 1

    def interpolate(self, attr: Tensor, tri: Tensor) -> Tensor:
        if self.n == 0:  # nothing visible: skip the backend (nvdiffrast rejects empty images)
            return attr.new_zeros(0, attr.shape[-1])
        out = self.backend.interpolate(attr, self.rast, tri)
        return out.reshape(self.n, out.shape[-1])

    def subset(self, index: Tensor) -> _Packed:
        """The pixels ``index`` (into this pack) as a pack of their own."""
        return _Packed(self.backend, self.rast[:, :, index], int(index.numel()))

    def texture(self, tex: Tensor, uv: Tensor, boundary: str) -> Tensor:
        if self.n == 0:
            return tex.new_zeros(0, tex.shape[-1])
        out = self.backend.texture(tex, uv.reshape(1, 1, self.n, 2), "linear", boundary)
        return out.reshape(self.n, out.shape[-1])

    def blend(self, corner_values: Tensor) -> Tensor:
        """Per-pixel values from per-pixel corner values [N,3,C] and the barycentrics."""
        r = self.rast.reshape(self.n, 4)
        u, v = r[:, 0:1], r[:, 1:2]
        c = corner_values.to(r.dtype)
        return c[:, 2] + u * (c[:, 0] - c[:, 2]) + v * (c[:, 1] - c[:, 2])


@register("renderer", "mesh")
class MeshRenderer:
    """Differentiable mesh rasterizer (torch or nvdiffrast) with Lambert shading and UV materials."""

    @dataclass
    class Config:
        resolution: int = 512
        """Output image height in pixels; the width follows the cameras' aspect (width / height)."""
        backend: Literal["auto", "torch", "nvdiffrast"] = "auto"
        """Rasterizer: auto = nvdiffrast on CUDA when installed, else the pure-PyTorch one."""
        antialias: bool = True
        """Antialias silhouettes (needed for position gradients at the silhouette)."""
        cull_backfaces: bool = False
        """Skip triangles facing away from the camera (a speed hint for closed surfaces seen from
        outside; the torch backend's rasterization cost drops by about 40%, nvdiffrast ignores it)."""
        background: Literal["white", "black", "random", "color"] = "white"
        """Background of rgb/albedo/shading; random = a uniform colour per image from the generator;
        color = ``background_color``."""
        background_color: tuple[float, float, float] = (0.58, 0.47, 0.41)
        """RGB in [0, 1] of ``background: color`` (default: HeadArtist's texture background)."""
        normal_space: Literal["world", "camera"] = "world"
        """Frame of the normal images; camera = OpenGL camera axes (+z toward the viewer)."""
        shading_albedo: float = 0.8
        """Grey albedo of the 'shading' mode."""
        texture_boundary: Literal["clamp", "wrap"] = "clamp"
        """How UV lookups outside [0, 1] behave for albedo, normal and latent maps."""

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        if self.cfg.resolution < 1:
            raise HeadgenError(f"renderer.resolution must be a positive integer, got {self.cfg.resolution}")
        if not all(0.0 <= c <= 1.0 for c in self.cfg.background_color):
            raise HeadgenError(
                f"renderer.background_color must be RGB in [0, 1], got {list(self.cfg.background_color)}"
            )

    def backend_for(self, device: torch.device) -> RasterBackend:
        return get_backend(self.cfg.backend, device)

    def image_size(self, cameras: Cameras) -> tuple[int, int]:
        height = self.cfg.resolution
        return height, max(1, round(height * cameras.width / cameras.height))

    # ------------------------------------------------------------------ main entry
    def render(
        self,
        geometry: SurfaceGeometry | Mesh,
        cameras: Cameras,
        lights: Lights | None = None,
        modes: Sequence[str] = ("rgb", "opacity"),
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Render ``modes`` of ``geometry`` from every camera; see the module docstring."""
        modes = tuple(modes)
        for m in modes:
            if m not in MODES:
                raise HeadgenError(
                    f"mesh renderer: unknown mode '{m}'{did_you_mean(m, MODES)}; modes: {', '.join(MODES)}"
                )
        if isinstance(geometry, Mesh):
            geometry = SurfaceGeometry(geometry)
        surfaces = geometry.surfaces()
        surfaces = surfaces[:1] + [s for s in surfaces[1:] if s.alpha >= 1.0]
        lacking = [s.name or "unnamed" for s in surfaces[1:] if s.base_latent is None]
        if lacking and "latent" in modes:
            raise HeadgenError(
                "mesh renderer: mode 'latent' needs a base_latent on every part, but "
                f"{', '.join(lacking)} has none; give the parts one or render the surface without them"
            )
        mesh, owner = (geometry.mesh, None) if len(surfaces) == 1 else concat_meshes([s.mesh for s in surfaces])
        dev, dtype = mesh.v_pos.device, mesh.v_pos.dtype
        cams = cameras.to(dev)
        bsz = cams.batch_size
        height, width = self.image_size(cams)
        backend = self.backend_for(dev)
        tri = mesh.t_pos_idx

        v_h = F.pad(mesh.v_pos, (0, 1), value=1.0)
        pos_clip = torch.einsum("vi,bji->bvj", v_h, cams.mvp().to(dtype))
        rast, _ = backend.rasterize(pos_clip, tri, (height, width), cull_back=self.cfg.cull_backfaces)
        # Shade only the covered pixels: they are packed into a [1, 1, N, 4] "image" that goes
        # through the same backend ops (per-pixel, so any layout works) and scattered back once.
        flat = rast.reshape(-1, 4)
        vis = (flat[:, 3].detach() > 0).nonzero().squeeze(1)
        npx = vis.numel()
        packed = take(flat, vis).reshape(1, 1, npx, 4)
        pix_b = torch.div(vis, height * width, rounding_mode="floor")
        px = _Packed(backend, packed, npx)
        want = set(modes)

        uv = None
        uses_uv = "uv" in want or "latent" in want
        for s in surfaces:
            uses_map = s.albedo_map is not None and bool(want & {"rgb", "albedo"})
            uses_nmap = s.normal_map is not None and bool(want & {"rgb", "shading", "normal", "normal_opacity"})
            uses_uv = uses_uv or uses_map or uses_nmap
            if (uses_uv if s is surfaces[0] else uses_map or uses_nmap) and s.mesh.v_tex is None:
                which = f" of part {s.name!r}" if s is not surfaces[0] else ""
                raise HeadgenError(
                    "mesh renderer: the requested modes/materials (uv, latent, albedo_map or normal_map) "
                    f"need UVs, but the mesh{which} has no v_tex"
                )
        if uses_uv:
            uv = px.interpolate(mesh.v_tex.to(dtype), mesh.uv_idx)
        groups = self._surface_groups(geometry, surfaces, mesh, owner, px)

        normal = None
        if want & {"rgb", "shading", "normal", "normal_opacity"}:
            normal = _per_surface(groups, uv, self._normals)

        shade = None
        if want & {"rgb", "shading"}:
            lt = lights.to(dev) if lights is not None else Lights.headlight(cams)
            ndl = (normal * lt.direction.to(dtype)[pix_b]).sum(-1, keepdim=True).clamp(min=0)
            shade = lt.ambient.to(dtype)[pix_b] + lt.color.to(dtype)[pix_b] * ndl

        bg = None
        if want & {"rgb", "albedo", "shading"}:
            bg = self._background(bsz, dev, dtype, generator)

        # name -> (values at the covered pixels [N,C], background [B,C] or None for zeros)
        layers: dict[str, tuple[Tensor, Tensor | None]] = {}
        if want & {"rgb", "albedo"}:
            albedo = _per_surface(groups, uv, self._albedo)
            if "albedo" in want:
                layers["albedo"] = (albedo, bg)
            if "rgb" in want:
                layers["rgb"] = ((albedo * shade).clamp(0.0, 1.0), bg)
        if "shading" in want:
            layers["shading"] = ((self.cfg.shading_albedo * shade).clamp(0.0, 1.0), bg)
        if want & {"normal", "normal_opacity"}:
            n = normal
            if self.cfg.normal_space == "camera":
                n = torch.einsum("ni,nij->nj", n, cams.c2w[:, :3, :3].to(dtype)[pix_b])
            if "normal" in want:
                layers["normal"] = ((n + 1.0) * 0.5, None)
            if "normal_opacity" in want:
                layers["normal_opacity"] = (torch.cat([n, n.new_ones(npx, 1)], dim=-1), None)
        if "opacity" in want:
            layers["opacity"] = (packed.new_ones(npx, 1), None)
        if "latent" in want:
            bg_latent = self._latent_background(geometry, uv, bsz, generator)
            layers["latent"] = (_per_surface(groups, uv, self._latent), bg_latent)
        if "depth" in want:
            # Camera-space depth is the clip w, interpolated with the perspective-correct barycentrics.
            w_corner = pos_clip[..., 3][pix_b.unsqueeze(1), tri.long()[px.tri_id]]
            layers["depth"] = (px.blend(w_corner.unsqueeze(-1)), None)
        if "uv" in want:
            layers["uv"] = (uv, None)

        images: dict[str, Tensor] = {}
        groups = [[m for m in _ANTIALIASED if m in layers]] if self.cfg.antialias else []
        groups.append([m for m in layers if not groups or m not in groups[0]])
        for gi, names in enumerate(groups):
            if not names:
                continue
            vals = torch.cat([layers[m][0] for m in names], dim=-1)
            bgs = [
                layers[m][1] if layers[m][1] is not None else vals.new_zeros(bsz, layers[m][0].shape[-1]) for m in names
            ]
            base = torch.cat(bgs, dim=-1)[:, None, :].expand(bsz, height * width, -1)
            img = base.reshape(-1, vals.shape[-1]).index_put((vis,), vals)
            img = img.view(bsz, height, width, -1)
            if self.cfg.antialias and gi == 0:
                img = backend.antialias(img, rast, pos_clip, tri)
            sizes = [layers[m][0].shape[-1] for m in names]
            for m, part in zip(names, torch.split(img, sizes, dim=-1)):
                images[m] = part
        return {m: images[m] for m in modes}

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _surface_groups(
        geometry: SurfaceGeometry, surfaces: list[SurfaceGeometry], mesh: Mesh, owner: Tensor | None, px: _Packed
    ) -> list[tuple[SurfaceGeometry, _Packed, Tensor | None]]:
        """(materials on the rasterised mesh, its pixels, their index into ``px``) per surface."""
        if owner is None:
            return [(geometry, px, None)]
        sid = owner[px.tri_id]
        groups = []
        start = 0
        for i, s in enumerate(surfaces):
            color = None
            if s.v_color is not None:  # per-vertex data of this surface, zero on the others' vertices
                color = s.v_color.new_zeros(mesh.num_vertices, s.v_color.shape[-1])
                color[start: start + s.mesh.num_vertices] = s.v_color
            start += s.mesh.num_vertices
            view = SurfaceGeometry(mesh, albedo_map=s.albedo_map, normal_map=s.normal_map, albedo_fn=s.albedo_fn,
                                   v_color=color, base_color=s.base_color, name=s.name, latent_map=s.latent_map,
                                   base_latent=s.base_latent)
            index = (sid == i).nonzero().squeeze(1)
            groups.append((view, px.subset(index), index))
        return groups

    def _normals(self, geometry: SurfaceGeometry, px: _Packed, uv: Tensor | None) -> Tensor:
        mesh = geometry.mesh
        n = F.normalize(px.interpolate(mesh.vertex_normals(), mesh.t_pos_idx), dim=-1, eps=1e-20)
        if geometry.normal_map is None:
            return n
        t4 = px.interpolate(mesh.vertex_tangents(), mesh.uv_idx)
        t = t4[:, :3]
        t = F.normalize(t - (t * n).sum(-1, keepdim=True) * n, dim=-1, eps=1e-20)
        sign = torch.where(t4[:, 3:4] < 0, -1.0, 1.0).to(n.dtype)
        b = sign * torch.cross(n, t, dim=-1)
        m = px.texture(geometry.normal_map.to(n.dtype), uv, self.cfg.texture_boundary) * 2.0 - 1.0
        return F.normalize(m[:, 0:1] * t + m[:, 1:2] * b + m[:, 2:3] * n, dim=-1, eps=1e-20)

    def _albedo(self, geometry: SurfaceGeometry, px: _Packed, uv: Tensor | None) -> Tensor:
        mesh = geometry.mesh
        dtype = mesh.v_pos.dtype
        if geometry.albedo_map is not None:
            return px.texture(geometry.albedo_map.to(dtype), uv, self.cfg.texture_boundary)
        if geometry.v_color is not None:
            return px.interpolate(geometry.v_color.to(dtype), mesh.t_pos_idx)
        if geometry.albedo_fn is not None:
            return geometry.albedo_fn(px.interpolate(mesh.v_pos, mesh.t_pos_idx))
        if geometry.base_color is not None:
            return geometry.base_color.to(mesh.v_pos.device, dtype).expand(px.n, 3)
        part = f" (part {geometry.name!r})" if geometry.name else ""
        raise HeadgenError(
            f"mesh renderer: modes 'rgb'/'albedo' need a material{part} (albedo_map with UVs, v_color, "
            "albedo_fn or base_color); render mode 'shading' for bare geometry"
        )

    def _latent(self, geometry: SurfaceGeometry, px: _Packed, uv: Tensor | None) -> Tensor:
        if geometry.latent_map is None:
            if geometry.base_latent is not None:
                return geometry.base_latent.to(px.rast.device, px.rast.dtype).expand(px.n, -1)
            raise HeadgenError("mesh renderer: mode 'latent' needs SurfaceGeometry.latent_map [C,h,w]")
        return px.texture(geometry.latent_map.permute(1, 2, 0).to(uv.dtype), uv, self.cfg.texture_boundary)

    @staticmethod
    def _latent_background(geometry: SurfaceGeometry, uv: Tensor, bsz: int,
                           generator: torch.Generator | None) -> Tensor:
        if geometry.latent_map is None:
            raise HeadgenError("mesh renderer: mode 'latent' needs SurfaceGeometry.latent_map [C,h,w]")
        gdev = generator.device if generator is not None else uv.device
        bg = torch.randn(bsz, geometry.latent_map.shape[0], generator=generator, device=gdev)
        return bg.to(device=uv.device, dtype=uv.dtype)

    def _background(
        self, bsz: int, device: torch.device, dtype: torch.dtype, generator: torch.Generator | None
    ) -> Tensor:
        if self.cfg.background == "white":
            return torch.ones(bsz, 3, device=device, dtype=dtype)
        if self.cfg.background == "black":
            return torch.zeros(bsz, 3, device=device, dtype=dtype)
        if self.cfg.background == "color":
            return torch.tensor(self.cfg.background_color, device=device, dtype=dtype).expand(bsz, 3)
        gdev = generator.device if generator is not None else device
        return torch.rand(bsz, 3, generator=generator, device=gdev).to(device=device, dtype=dtype)


def _per_surface(
    groups: list[tuple[SurfaceGeometry, _Packed, Tensor | None]], uv: Tensor | None,
    fn: Callable[[SurfaceGeometry, _Packed, Tensor | None], Tensor],
) -> Tensor:
    """``fn(surface, pixels, uv)`` evaluated per surface, scattered into one [N, C] tensor."""
    if len(groups) == 1 and groups[0][2] is None:
        return fn(groups[0][0], groups[0][1], uv)
    n = sum(g[1].n for g in groups)
    parts = [(index, fn(view, px, None if uv is None else uv[index])) for view, px, index in groups]
    first = parts[0][1]
    out = first.new_zeros(n, first.shape[-1])
    for index, values in parts:
        out = out.index_put((index,), values)
    return out


__all__ = ["MODES", "MeshRenderer", "SurfaceGeometry"]
