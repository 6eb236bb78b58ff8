"""DMTet: a signed distance field and vertex offsets on a tetrahedral grid, meshed by marching
tetrahedra every step, with a hash-grid colour field for the texture (HeadArtist's geometry and
texture stages; HeadSculpt's fine stage).

Geometry
--------
The grid is the Kuhn tetrahedral grid of :mod:`headgen.geometry.tets` scaled into the box
``box_center +- box_half`` (buffers, so a saved result keeps its box). Each grid vertex has an
SDF value and an offset ``deformation_scale * cell * tanh(raw)`` (bounded to a fraction of a cell
so tetrahedra do not invert), either stored per vertex (``geometry: direct``) or predicted by
hash-grid MLPs at the vertex (``geometry: hashgrid``). Marching tetrahedra turns them into a
watertight mesh, differentiable w.r.t. both; only the tetrahedra of cubes whose corners change
sign are processed, and (for ``hashgrid``) the networks run with gradients only at their
vertices. Vertices on the box faces are kept outside, so the mesh is closed even where the
shape touches the box.

Modes: ``full`` trains SDF, offsets and colour; ``fix-geometry`` only the colour field (the mesh
is then extracted once and reused); ``offsets-only`` keeps the SDF and trains offsets (+ colour),
as HeadArtist's editing does. With ``match_previous`` a stage's DMTet takes the grid, box and
network sizes of the previous stage's (only ``mode`` and ``export_texture_size`` are its own), so an
editing recipe continues any run. Export (UV unwrap + baked albedo) is cached until the geometry,
the colour field or the texture size changes, so the exporters of one stage share one unwrap.

Initialisation (``init``), done on first use so a saved result is never refitted: ``sphere``
(radius ``init_radius``), ``head`` (the signed distance of ``ctx.head``'s neutral mesh; with
``fit_box_to_head`` the box is first placed around that mesh) or ``none``. The ``direct``
parameterisation takes the target SDF at the grid vertices as is (that is already the best
per-vertex fit, no optimisation needed); ``hashgrid`` is fitted with Adam for ``init_steps`` steps
on ``init_points`` points per step, drawn from a pool of near-surface and uniform samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headgen.encoding.hashgrid import HashField, HashGridConfig, full_hashgrid
from headgen.errors import ConfigError, HeadgenError
from headgen.gather import take
from headgen.geometry.marching_tets import TET_EDGES, marching_tets, mesh_edges
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.geometry.sdf import MeshSDF, cap_holes
from headgen.geometry.tets import TetGrid, tet_grid
from headgen.geometry.unwrap import UnwrapMethod, textured_mesh
from headgen.registry import register
from representations.base import Representation

if TYPE_CHECKING:
    from headgen.context import RunContext


def _geometry_encoding() -> HashGridConfig:
    return HashGridConfig(
        levels=12, features_per_level=2, log2_hashmap_size=17, base_resolution=16, max_resolution=512
    )


# --------------------------------------------------------------------------- SDF targets
@dataclass
class SDFTarget:
    """A signed distance function to initialise from, and a sampler of points on its surface."""

    sdf: Callable[[Tensor], Tensor]
    """World points [N,3] -> signed distance [N] (negative inside)."""
    surface: Callable[[int, torch.Generator], Tensor]
    """(n, generator) -> n points [n,3] on the zero level set."""

    @classmethod
    def sphere(cls, center: Tensor, radius: float) -> SDFTarget:
        def sdf(x: Tensor) -> Tensor:
            return (x - center.to(x)).norm(dim=-1) - radius

        def surface(n: int, gen: torch.Generator) -> Tensor:
            d = F.normalize(torch.randn(n, 3, generator=gen), dim=-1)
            return center.cpu() + radius * d

        return cls(sdf, surface)

    @classmethod
    def mesh(cls, vertices: Tensor | np.ndarray, faces: Tensor | np.ndarray, band: float = 0.05) -> SDFTarget:
        """The signed distance of a closed triangle mesh (see :class:`headgen.geometry.sdf.MeshSDF`)."""
        msdf = MeshSDF(vertices, faces)
        tri = msdf.tri.float()
        area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)

        def sdf(x: Tensor) -> Tensor:
            return msdf(x, band=band)

        def surface(n: int, gen: torch.Generator) -> Tensor:
            f = torch.multinomial(area, n, replacement=True, generator=gen)
            r = torch.rand(n, 2, generator=gen)
            flip = r.sum(-1) > 1
            r = torch.where(flip[:, None], 1 - r, r)
            t = tri[f]
            return t[:, 0] + r[:, :1] * (t[:, 1] - t[:, 0]) + r[:, 1:] * (t[:, 2] - t[:, 0])

        return cls(sdf, surface)


def head_mesh_arrays(head: Any) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V,3], faces [F,3]) of a head model's neutral mesh (``v_template``, ``faces``),
    its holes capped (:func:`headgen.geometry.sdf.cap_holes`: ICT-FaceKit's skin is open under the
    neck) so that it has a signed distance."""
    if head is None or not hasattr(head, "v_template") or not hasattr(head, "faces"):
        raise HeadgenError(
            "this representation needs a head model with a neutral mesh (v_template, faces); add `head:` "
            "to the recipe (e.g. head: {type: builtin}) or choose another init / density prior"
        )
    v = head.v_template
    f = head.faces
    v = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
    f = f.detach().cpu().numpy() if isinstance(f, Tensor) else np.asarray(f)
    return cap_holes(v.astype(np.float64), f.astype(np.int64))


def _head_of(ctx: Any) -> Any:
    """``ctx.head``, or None when there is no context or the recipe says ``head: null``."""
    if ctx is None:
        return None
    config = getattr(ctx, "config", None)
    if config is not None and getattr(config, "head", True) is None:
        return None
    return ctx.head


# --------------------------------------------------------------------------- representation
@register("representation", "dmtet")
class DMTet(Representation):
    """DMTet: SDF + offsets on a tetrahedral grid, marching tetrahedra, hash-grid colour field."""

    @dataclass
    class Config:
        resolution: int = 64
        """Grid resolution (cubes per side; 6 tetrahedra per cube). 128 for final quality (GPU)."""
        half_size: float = 0.75
        """Half the side of the cubic box the grid fills (world units; heads are ~1 unit tall)."""
        center: tuple[float, float, float] = (0.0, 0.0, 0.0)
        """Centre of the box."""
        fit_box_to_head: bool = True
        """With init: head, place the box around the head mesh (its bounding box + box_margin)."""
        box_margin: float = 0.05
        """Margin around the head mesh when fit_box_to_head is on."""
        geometry: Literal["direct", "hashgrid"] = "direct"
        """direct: one SDF value and offset per grid vertex; hashgrid: predicted by hash-grid MLPs."""
        geometry_encoding: HashGridConfig = field(default_factory=_geometry_encoding)
        """Hash grid of the SDF/offset networks (geometry: hashgrid)."""
        geometry_mlp_width: int = 64
        """Hidden units of the SDF/offset MLPs."""
        geometry_mlp_depth: int = 1
        """Hidden layers of the SDF/offset MLPs."""
        deformation: bool = True
        """Learn per-vertex offsets (the 'D' of DMTet)."""
        deformation_scale: float = 0.5
        """Largest offset, in grid cells (tanh-bounded)."""
        color_encoding: HashGridConfig = field(default_factory=full_hashgrid)
        """Hash grid of the colour field."""
        color_mlp_width: int = 64
        """Hidden units of the colour MLP."""
        color_mlp_depth: int = 1
        """Hidden layers of the colour MLP."""
        init: Literal["none", "sphere", "head"] = "sphere"
        """Initial shape: none (converter sets it), sphere (init_radius), head (ctx.head's neutral mesh)."""
        init_radius: float = 0.5
        """Radius of the initial sphere."""
        init_steps: int = 300
        """Adam steps of the SDF fit (geometry: hashgrid; direct assigns the target exactly)."""
        init_lr: float = 1.0e-2
        """Learning rate of the SDF fit."""
        init_points: int = 4096
        """Points per step of the SDF fit."""
        mode: Literal["full", "fix-geometry", "offsets-only"] = "full"
        """Which parameters train: all; colour only; offsets (+ colour) with the SDF fixed."""
        export_texture_size: int = 1024
        """Side of the albedo map baked by export_surface (the OBJ / preview exporters)."""
        export_unwrap: UnwrapMethod = "normal-charts"
        """How export cuts UV charts (headgen.geometry.unwrap): ``normal-charts`` (by facing direction,
        projected; HeadArtist's 271k-face head in 5 s) or ``xatlas`` (113 s for the same head)."""
        match_previous: bool = False
        """Take the grid, box and network sizes from the previous stage's DMTet (everything but mode and
        export_texture_size), so a recipe can continue a run whose sizes it does not know (editing)."""

    def __init__(self, cfg: Config, ctx: RunContext | None = None) -> None:
        super().__init__(cfg, ctx)
        if cfg.resolution < 2:
            raise ConfigError(f"representation.resolution must be >= 2, got {cfg.resolution}")
        if cfg.half_size <= 0:
            raise ConfigError(f"representation.half_size must be > 0, got {cfg.half_size}")
        if cfg.mode == "offsets-only" and not cfg.deformation:
            raise ConfigError("representation.mode: offsets-only needs deformation: true")
        if not 0 <= cfg.deformation_scale <= 1:
            raise ConfigError(
                f"representation.deformation_scale must be in [0, 1] grid cells, got {cfg.deformation_scale}"
            )
        self._ctx = ctx
        self.register_buffer("box_center", torch.tensor(cfg.center, dtype=torch.float32))
        self.register_buffer("box_half", torch.tensor(float(cfg.half_size)))
        self.register_buffer("initialized", torch.tensor(False))
        self._build_fields()
        self._apply_mode()

    _FIELDS = ("sdf", "deform", "sdf_net", "deform_net", "color_net")

    def _build_fields(self) -> None:
        """(Re)create the SDF/offset parameters or networks and the colour field from ``self.cfg``."""
        cfg = self.cfg
        # The caches are keyed by parameter ids and versions: new parameters may reuse old ids.
        self._cache: tuple[tuple, dict[str, Tensor]] | None = None
        self._export_cache: tuple[tuple, tuple[Mesh, Tensor]] | None = None
        for name in self._FIELDS:
            if hasattr(self, name):
                delattr(self, name)
        nv = tet_grid(cfg.resolution).num_vertices
        if cfg.geometry == "direct":
            self.sdf = nn.Parameter(torch.zeros(nv))
            self.deform = nn.Parameter(torch.zeros(nv, 3)) if cfg.deformation else None
        else:
            w, d = cfg.geometry_mlp_width, cfg.geometry_mlp_depth
            self.sdf_net = HashField(cfg.geometry_encoding, 1, w, d)
            self.deform_net = HashField(cfg.geometry_encoding, 3, w, d) if cfg.deformation else None
            if self.deform_net is not None:  # start undeformed
                nn.init.zeros_(self.deform_net.mlp.net[-1].weight)
                nn.init.zeros_(self.deform_net.mlp.net[-1].bias)
        self.color_net = HashField(cfg.color_encoding, 3, cfg.color_mlp_width, cfg.color_mlp_depth)

    # ------------------------------------------------------------------ parameters
    def _geometry_params(self, which: str) -> list[nn.Parameter]:
        if self.cfg.geometry == "direct":
            p = self.sdf if which == "sdf" else self.deform
            return [] if p is None else [p]
        net = self.sdf_net if which == "sdf" else self.deform_net
        return [] if net is None else list(net.parameters())

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``sdf``, ``deformation``, ``color`` as far as they exist and train in this mode."""
        mode = self.cfg.mode
        groups: dict[str, list[nn.Parameter]] = {}
        if mode == "full":
            groups["sdf"] = self._geometry_params("sdf")
        if mode in ("full", "offsets-only") and self.cfg.deformation:
            groups["deformation"] = self._geometry_params("deformation")
        groups["color"] = list(self.color_net.parameters())
        return {k: v for k, v in groups.items() if v}

    def _apply_mode(self) -> None:
        trained = {id(p) for ps in self.param_groups().values() for p in ps}
        for p in self.parameters():
            p.requires_grad_(id(p) in trained)

    # ------------------------------------------------------------------ frame
    @property
    def grid(self) -> TetGrid:
        return tet_grid(self.cfg.resolution, self.box_half.device)

    def cell_size(self) -> float:
        """Grid cell edge in world units."""
        return float(self.box_half) * 2.0 / self.cfg.resolution

    def to_unit(self, x: Tensor) -> Tensor:
        """World points -> [0,1]^3 coordinates of the box (the hash grids' input)."""
        return ((x - self.box_center) / self.box_half + 1.0) * 0.5

    def grid_vertices(self, idx: Tensor | None = None) -> Tensor:
        """World positions of the undeformed grid vertices (all, or ``idx``)."""
        v = self.grid.vertices if idx is None else self.grid.vertices[idx]
        return self.box_center + self.box_half * v

    # ------------------------------------------------------------------ fields at vertices
    def vertex_sdf(self, idx: Tensor | None = None, chunk: int = 262144) -> Tensor:
        """SDF at grid vertices (all, or ``idx``), before the box-boundary clamp."""
        if self.cfg.geometry == "direct":
            return self.sdf if idx is None else take(self.sdf, idx)
        x = self.to_unit(self.grid_vertices(idx))
        return torch.cat([self.sdf_net(c)[:, 0] for c in x.split(chunk)], dim=0)

    def vertex_offsets(self, idx: Tensor) -> Tensor:
        """World offsets [n,3] of the grid vertices ``idx``."""
        if not self.cfg.deformation:
            return self.box_half.new_zeros(idx.shape[0], 3)
        if self.cfg.geometry == "direct":
            raw = take(self.deform, idx)
        else:
            raw = self.deform_net(self.to_unit(self.grid_vertices(idx)))
        return self.cfg.deformation_scale * self.cell_size() * torch.tanh(raw)

    def _clamp_boundary(self, sdf: Tensor, idx: Tensor | None) -> Tensor:
        boundary = self.grid.boundary_mask if idx is None else self.grid.boundary_mask[idx]
        # Keep the box faces outside so the surface never runs off the grid (always closed).
        floor = 1e-3 * self.cell_size()
        return torch.where(boundary, sdf.clamp_min(floor), sdf)

    # ------------------------------------------------------------------ extraction
    def _cache_key(self) -> tuple:
        # Only the geometry counts: in fix-geometry mode the mesh is extracted once and reused
        # while the colour field trains (optimiser steps bump the versions of what they update).
        geometry = [p for name in ("sdf", "deformation") for p in self._geometry_params(name)]
        versions = tuple((id(p), p._version) for p in geometry)
        buffers = tuple(b._version for b in (self.box_center, self.box_half))
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in geometry)
        return (versions, buffers, grad, self.box_half.device)

    def _extract(self) -> dict[str, Tensor]:
        self.ensure_initialized()
        key = self._cache_key()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        grad = key[2]
        with torch.set_grad_enabled(grad):
            with torch.no_grad():
                inside = self._clamp_boundary(self.vertex_sdf(), None) < 0
                tets = self.grid.surface_tets(inside)
                used, local = torch.unique(tets, return_inverse=True)
                local = local.reshape(-1, 4)
            sdf = self._clamp_boundary(self.vertex_sdf(used), used)
            pos = self.grid_vertices(used)
            if self.cfg.deformation:
                pos = pos + self.vertex_offsets(used)
            verts, faces = marching_tets(pos, sdf, local)
        out = {"v_pos": verts, "t_pos_idx": faces, "sdf": sdf, "tets": local}
        self._cache = (key, out)
        if grad:
            # A backward pass frees this graph: drop the cache then, so the next call re-extracts
            # even if no optimiser step changed the parameters in between.
            for t in (verts, sdf):
                if t.requires_grad:
                    t.register_hook(self._drop_cache)
        return out

    def _drop_cache(self, grad: Tensor) -> None:
        self._cache = None

    def extract_mesh(self) -> Mesh:
        """The current surface (marching tetrahedra; differentiable when gradients are on)."""
        out = self._extract()
        return Mesh(out["v_pos"], out["t_pos_idx"])

    def albedo(self, x: Tensor) -> Tensor:
        """The colour field: world points [N,3] -> albedo [N,3] in [0,1]."""
        return torch.sigmoid(self.color_net(self.to_unit(x)))

    def render_input(self) -> SurfaceGeometry:
        mesh = self.extract_mesh()
        if mesh.num_faces == 0:
            raise HeadgenError(
                "dmtet: the surface is empty (no SDF sign change on the grid); the SDF collapsed or the "
                "init did not fit in the box; lower the SDF learning rate or check init/half_size"
            )
        return SurfaceGeometry(mesh=mesh, albedo_fn=self.albedo)

    @torch.no_grad()
    def export_mesh(self, texture_size: int | None = None) -> tuple[Mesh, Tensor]:
        """(mesh with UVs, baked albedo texture [h,w,3] in [0,1]).

        Unwrapping and baking are the slow part: the result is kept until the geometry, the colour
        field, the size or the unwrap method changes, so the exporters of one export stage share it."""
        size = texture_size or self.cfg.export_texture_size
        colour = tuple((id(p), p._version) for p in self.color_net.parameters())
        key = (self._cache_key(), colour, size, self.cfg.export_unwrap)
        if self._export_cache is None or self._export_cache[0] != key:
            mesh = self.extract_mesh()
            mesh = Mesh(mesh.v_pos.detach(), mesh.t_pos_idx)
            self._export_cache = (key, textured_mesh(mesh, self.albedo, size, method=self.cfg.export_unwrap))
        return self._export_cache[1]

    def export_surface(self) -> SurfaceGeometry:
        """What the exporters write: the UV-mapped mesh with its baked albedo map."""
        mesh, texture = self.export_mesh()
        return SurfaceGeometry(mesh=mesh, albedo_map=texture)

    # ------------------------------------------------------------------ regularisers
    def reg_normal_consistency(self, step: int) -> Tensor:
        """Mean ``1 - cos`` between the normals of the two faces of every mesh edge."""
        mesh = self.extract_mesh()
        if mesh.num_faces == 0:
            return mesh.v_pos.sum() * 0.0
        fn = mesh.face_normals()
        _, face_edges = mesh_edges(mesh.t_pos_idx)
        flat = face_edges.reshape(-1)
        order = torch.argsort(flat, stable=True)
        owner = torch.arange(mesh.num_faces, device=fn.device).repeat_interleave(3)[order]
        e_sorted = flat[order]
        # A watertight mesh has every edge twice: consecutive entries of the sorted list pair up.
        pair = e_sorted[:-1] == e_sorted[1:]
        f0, f1 = owner[:-1][pair], owner[1:][pair]
        return (1.0 - (take(fn, f0) * take(fn, f1)).sum(-1)).mean()

    def reg_laplacian(self, step: int) -> Tensor:
        """Mean length of the uniform Laplacian ``mean(neighbours) - v`` over mesh vertices."""
        mesh = self.extract_mesh()
        if mesh.num_faces == 0:
            return mesh.v_pos.sum() * 0.0
        edges, _ = mesh_edges(mesh.t_pos_idx)
        v = mesh.v_pos
        i, j = edges[:, 0], edges[:, 1]
        acc = torch.zeros_like(v).index_add(0, i, take(v, j)).index_add(0, j, take(v, i))
        deg = torch.zeros(v.shape[0], device=v.device, dtype=v.dtype)
        deg = deg.index_add(0, i, torch.ones_like(i, dtype=v.dtype)).index_add(
            0, j, torch.ones_like(j, dtype=v.dtype)
        )
        lap = acc / deg.clamp_min(1.0)[:, None] - v
        return lap.norm(dim=-1).mean()

    def reg_sdf_sign(self, step: int) -> Tensor:
        """Sign-flip penalty on the tetrahedron edges that cross the surface (nvdiffrec's SDF
        regulariser): binary cross-entropy of each end's SDF against the other end's sign. It
        pushes the SDF away from zero across the surface, removing floaters and thin sheets."""
        out = self._extract()
        sdf, tets = out["sdf"], out["tets"]
        e = tets[:, TET_EDGES.to(tets.device)].reshape(-1, 2)
        sa, sb = sdf[e[:, 0]], sdf[e[:, 1]]
        cross = (sa > 0) != (sb > 0)
        if not bool(cross.any()):
            return sdf.sum() * 0.0
        sa, sb = sa[cross], sb[cross]
        scale = 1.0 / self.cell_size()  # logits in cells, so the loss does not depend on the box
        return F.binary_cross_entropy_with_logits(
            sa * scale, (sb > 0).to(sa.dtype)
        ) + F.binary_cross_entropy_with_logits(sb * scale, (sa > 0).to(sb.dtype))

    # ------------------------------------------------------------------ initialisation
    def ensure_initialized(self) -> None:
        """Run ``init`` once (a loaded or converted DMTet is already initialised)."""
        if bool(self.initialized):
            return
        cfg = self.cfg
        if cfg.init == "sphere":
            self.fit_sdf(SDFTarget.sphere(self.box_center.detach().clone(), cfg.init_radius))
        elif cfg.init == "head":
            v, f = head_mesh_arrays(_head_of(self._ctx))
            if cfg.fit_box_to_head:
                lo, hi = v.min(0), v.max(0)
                center = torch.tensor((lo + hi) / 2, dtype=torch.float32)
                half = float((hi - lo).max() / 2 + cfg.box_margin)
                with torch.no_grad():
                    self.box_center.copy_(center)
                    self.box_half.fill_(half)
            self.fit_sdf(SDFTarget.mesh(v, f, band=2.5 * self.cell_size()))
        self.initialized.fill_(True)

    def fit_sdf(
        self,
        target: SDFTarget,
        steps: int | None = None,
        lr: float | None = None,
        points: int | None = None,
        seed: int = 0,
    ) -> dict[str, float]:
        """Make the SDF match ``target`` (direct: assign at the vertices; hashgrid: Adam fit).

        Offsets are reset to zero. Returns ``{'rmse': ...}`` of the final fit near the surface.
        """
        cfg = self.cfg
        steps = cfg.init_steps if steps is None else steps
        lr = cfg.init_lr if lr is None else lr
        points = cfg.init_points if points is None else points
        dev = self.box_half.device
        self._cache = None
        with torch.no_grad():
            if cfg.geometry == "direct":
                verts = self.grid_vertices()
                self.sdf.copy_(target.sdf(verts).to(self.sdf))
                if self.deform is not None:
                    self.deform.zero_()
                self.initialized.fill_(True)
                return {"rmse": 0.0}
        gen = torch.Generator().manual_seed(seed)
        cell = self.cell_size()
        pool_size = max(points * 8, 65536)
        n_surf = pool_size // 2
        surf = target.surface(n_surf, gen).float()
        noise = torch.randn(n_surf, 3, generator=gen) * torch.where(
            torch.rand(n_surf, 1, generator=gen) < 0.5, torch.tensor(cell), torch.tensor(4 * cell)
        )
        uni = (torch.rand(pool_size - n_surf, 3, generator=gen) * 2 - 1) * float(
            self.box_half
        ) + self.box_center.cpu()
        pool = torch.cat([surf + noise, uni], dim=0)
        lo = self.box_center.cpu() - self.box_half.cpu()
        hi = self.box_center.cpu() + self.box_half.cpu()
        pool = torch.maximum(torch.minimum(pool, hi), lo)
        with torch.no_grad():
            goal = target.sdf(pool).float()
        pool, goal = pool.to(dev), goal.to(dev)
        params = list(self.sdf_net.parameters())
        was = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=1e-15)
        with torch.enable_grad():
            for _ in range(steps):
                idx = torch.randint(0, pool.shape[0], (points,), generator=gen).to(dev)
                pred = self.sdf_net(self.to_unit(pool[idx]))[:, 0]
                loss = F.mse_loss(pred, goal[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        for p, w in zip(params, was):
            p.requires_grad_(w)
        with torch.no_grad():
            near = goal.abs() < 2 * cell
            pred = torch.cat([self.sdf_net(self.to_unit(c))[:, 0] for c in pool[near].split(65536)])
            rmse = float((pred - goal[near]).pow(2).mean().sqrt()) if near.any() else 0.0
            if self.deform_net is not None:
                nn.init.zeros_(self.deform_net.mlp.net[-1].weight)
                nn.init.zeros_(self.deform_net.mlp.net[-1].bias)
        self.initialized.fill_(True)
        self._cache = None
        return {"rmse": rmse}

    # ------------------------------------------------------------------ stage plumbing
    def load_from(self, previous: Representation) -> None:
        """Same type: copy the state. A ``direct`` DMTet of another resolution is resampled
        (trilinear SDF, offsets reset), so a coarse stage can hand over to a finer grid."""
        if not isinstance(previous, DMTet):
            super().load_from(previous)
            return
        previous.ensure_initialized()
        if self.cfg.match_previous:
            self._match(previous)
        same = previous.cfg.resolution == self.cfg.resolution and previous.cfg.geometry == self.cfg.geometry
        if same:
            try:
                self.load_state_dict(previous.state_dict())
            except RuntimeError as exc:
                raise ConfigError(
                    "dmtet: the previous stage's DMTet has other network sizes (colour/geometry encodings, "
                    f"MLPs or deformation) than this one; keep them equal to continue it ({exc})"
                ) from exc
        elif self.cfg.geometry == "direct" and previous.cfg.geometry == "direct":
            self._resample_from(previous)
        else:
            raise ConfigError(
                f"dmtet: cannot start a {self.cfg.geometry} grid of resolution {self.cfg.resolution} from a "
                f"{previous.cfg.geometry} grid of resolution {previous.cfg.resolution}; keep geometry and "
                "resolution, or use geometry: direct on both to resample"
            )
        self._cache = None
        self._apply_mode()

    def _match(self, previous: DMTet) -> None:
        """Rebuild with the previous DMTet's settings, keeping this one's mode and export size."""
        cfg = replace(previous.cfg, mode=self.cfg.mode, export_texture_size=self.cfg.export_texture_size,
                      export_unwrap=self.cfg.export_unwrap, match_previous=True)
        if cfg.mode == "offsets-only" and not cfg.deformation:
            raise ConfigError("representation.mode: offsets-only needs deformation, but the previous DMTet has none")
        if cfg != self.cfg:
            self.cfg = cfg
            self._build_fields()
            self.to(previous.box_half.device)

    @torch.no_grad()
    def _resample_from(self, previous: DMTet) -> None:
        from headgen.geometry.sdf import SDFGrid

        n = previous.cfg.resolution + 1
        old = SDFGrid(previous.sdf.detach().reshape(n, n, n), previous.box_center, float(previous.box_half))
        self.box_center.copy_(previous.box_center)
        self.box_half.copy_(previous.box_half)
        self.sdf.copy_(old(self.grid_vertices().to(previous.sdf.device)).to(self.sdf))
        if self.deform is not None:
            self.deform.zero_()
        self.color_net.load_state_dict(previous.color_net.state_dict())
        self.initialized.fill_(True)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._cache = None
        self._export_cache = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._cache = None
        self._export_cache = None
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def metrics(self, ctx: RunContext) -> dict[str, float]:
        mesh = self.extract_mesh()
        return {"vertices": float(mesh.num_vertices), "faces": float(mesh.num_faces)}


def mean_surface_distance(
    a: Mesh,
    b_vertices: Tensor | np.ndarray,
    b_faces: Tensor | np.ndarray,
    samples: int = 20000,
    seed: int = 0,
) -> float:
    """Symmetric mean distance between the surfaces of mesh ``a`` and the closed mesh ``b``
    (points sampled by area on each, exact point-to-triangle distances)."""
    gen = torch.Generator().manual_seed(seed)
    sa = MeshSDF(a.v_pos.detach().cpu(), a.t_pos_idx.cpu())
    sb = MeshSDF(b_vertices, b_faces)
    on_a = SDFTarget.mesh(sa.vertices, sa.faces).surface(samples, gen)
    on_b = SDFTarget.mesh(sb.vertices, sb.faces).surface(samples, gen)
    d_ab = sa.unsigned(on_b.double(), band=math.inf).mean()
    d_ba = sb.unsigned(on_a.double(), band=math.inf).mean()
    return float(0.5 * (d_ab + d_ba))


__all__ = ["DMTet", "SDFTarget", "head_mesh_arrays", "mean_surface_distance"]
