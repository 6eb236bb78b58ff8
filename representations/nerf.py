"""NeRF: density and colour fields on multi-resolution hash encodings (HeadSculpt's coarse stage).

The field lives in the cube ``[-bound, bound]^3`` (zero density outside); points are mapped to
``[0,1]^3`` for the hash grids (pure PyTorch, or tiny-cuda-nn on CUDA, see
:mod:`headgen.encoding.hashgrid`). ``sigma = act(h(x) + density_bias + prior(x))`` with ``act``
softplus or exp and ``h`` the density MLP's output.

Density priors (added before the activation, so the networks learn a residual):

* ``sphere``: stable-dreamfusion's blob, ``prior_strength * (1 - |x| / prior_radius)``.
* ``head`` (HeadSculpt): ``prior_strength * tanh(-sdf(x) / prior_width)`` with ``sdf`` the signed
  distance to ``ctx.head``'s neutral mesh: ``+strength`` inside, 0 on the surface, decaying to
  ``-strength`` with the distance outside, so the head is opaque and its surroundings empty from
  step 0. ``prior_width`` is the transition width (HeadSculpt's beta = 1e-3 is a near step; the
  default 0.01 is a little smoother so the density gradient, hence the normals, stays informative;
  the opaque region then sits about half a width inside the mesh). It is a length in world units:
  keep it near the spacing of the renderer's samples along a ray, or the samples straddle the
  transition and neither the surface nor its normals can move. ``prior_align_threshold`` shifts
  the transition outward by ``prior_width * atanh(act^-1(mesh_threshold) / prior_strength)`` so that
  the ``mesh_threshold`` surface (the one export and conversion read) is the head mesh's surface
  however wide the transition. The SDF is
  sampled once on a ``prior_resolution^3`` grid (a buffer, saved with the result) and read back
  trilinearly, differentiably twice, since normals are the density's gradient.

The volume renderer draws this object directly (``render_input()`` is ``self``); it implements
``density``, ``color`` and ``density_and_color``. Parameter groups: ``geometry`` (density hash grid
+ MLP) and ``color`` (colour hash grid + MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headgen.encoding.hashgrid import HashField, HashGridConfig, full_hashgrid
from headgen.errors import ConfigError, HeadgenError
from headgen.geometry.marching_tets import marching_tets
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.geometry.sdf import SDFGrid
from headgen.geometry.tets import tet_grid
from headgen.geometry.unwrap import UnwrapMethod, textured_mesh
from headgen.registry import register
from representations.base import Representation
from representations.dmtet import _head_of, head_mesh_arrays

if TYPE_CHECKING:
    from headgen.context import RunContext


@register("representation", "nerf")
class NeRF(Representation):
    """NeRF: hash-grid density and colour fields, optional head-shaped density prior."""

    @dataclass
    class Config:
        bound: float = 1.0
        """Half-side of the cube [-bound, bound]^3 the field fills (density 0 outside)."""
        density_encoding: HashGridConfig = field(default_factory=full_hashgrid)
        """Hash grid of the density field."""
        density_mlp_width: int = 64
        """Hidden units of the density MLP."""
        density_mlp_depth: int = 1
        """Hidden layers of the density MLP."""
        density_activation: Literal["softplus", "exp"] = "softplus"
        """sigma = act(h + density_bias + prior)."""
        density_bias: float = 0.0
        """Constant added before the activation (negative: start emptier)."""
        density_prior: Literal["none", "head", "sphere"] = "head"
        """Shape the density starts from: none, the head model's mesh (HeadSculpt), or a blob."""
        prior_strength: float = 10.0
        """Prior value deep inside (and minus it far outside, for head)."""
        prior_radius: float = 0.5
        """Blob radius (density_prior: sphere)."""
        prior_width: float = 0.01
        """SDF transition width of the head prior (world units)."""
        prior_align_threshold: bool = False
        """Shift the head prior's transition outward so the head mesh's surface sits at density
        mesh_threshold (false: density act(0) there, the threshold surface about half a width inside)."""
        prior_resolution: int = 96
        """Resolution of the grid the head SDF is sampled on."""
        color_encoding: HashGridConfig = field(default_factory=full_hashgrid)
        """Hash grid of the colour field."""
        color_mlp_width: int = 64
        """Hidden units of the colour MLP."""
        color_mlp_depth: int = 1
        """Hidden layers of the colour MLP."""
        color_channels: int = 3
        """Channels of the colour field (3 = RGB; 4 for a latent field)."""
        color_activation: Literal["sigmoid", "none"] = "sigmoid"
        """sigmoid keeps RGB in [0, 1]; none for latent fields."""
        mesh_threshold: float = 5.0
        """Density at which export_mesh places the surface."""
        export_resolution: int = 128
        """Tetrahedral grid resolution of export_mesh."""
        export_texture_size: int = 1024
        """Side of the colour map baked by export_mesh."""
        export_unwrap: UnwrapMethod = "normal-charts"
        """How export_mesh cuts UV charts (headgen.geometry.unwrap): by facing direction, or xatlas's (slower)."""

    def __init__(self, cfg: Config, ctx: RunContext | None = None) -> None:
        super().__init__(cfg, ctx)
        if cfg.bound <= 0:
            raise ConfigError(f"representation.bound must be > 0, got {cfg.bound}")
        if cfg.prior_width <= 0 or cfg.prior_radius <= 0:
            raise ConfigError("representation.prior_width and prior_radius must be > 0")
        if cfg.color_channels < 1:
            raise ConfigError(f"representation.color_channels must be >= 1, got {cfg.color_channels}")
        self._ctx = ctx
        self.density_net = HashField(cfg.density_encoding, 1, cfg.density_mlp_width, cfg.density_mlp_depth)
        self.color_net = HashField(
            cfg.color_encoding, cfg.color_channels, cfg.color_mlp_width, cfg.color_mlp_depth
        )
        self.prior_shift = self._prior_shift() if cfg.density_prior == "head" else 0.0
        self.register_buffer("initialized", torch.tensor(cfg.density_prior != "head"))
        self.prior_sdf: SDFGrid | None = None
        if cfg.density_prior == "head":
            if cfg.prior_resolution < 2:
                raise ConfigError(f"representation.prior_resolution must be >= 2, got {cfg.prior_resolution}")
            n = cfg.prior_resolution
            self.prior_sdf = SDFGrid(torch.zeros(n, n, n), (0.0, 0.0, 0.0), cfg.bound)
        self._ready = False

    def _prior_shift(self) -> float:
        """How far outside the head mesh the prior crosses zero (0 unless prior_align_threshold)."""
        cfg = self.cfg
        if not cfg.prior_align_threshold:
            return 0.0
        t = cfg.mesh_threshold
        if t <= 0:
            raise ConfigError(f"representation.mesh_threshold must be > 0, got {t}")
        # act^-1(t): the pre-activation value at which the density equals the threshold.
        raw = t + math.log(-math.expm1(-t)) if cfg.density_activation == "softplus" else math.log(t)
        if abs(raw) >= cfg.prior_strength:
            raise ConfigError(
                f"representation.prior_align_threshold: the prior (+-{cfg.prior_strength}) never reaches density "
                f"mesh_threshold {t} (pre-activation {raw:.3g}); raise prior_strength or lower mesh_threshold"
            )
        return cfg.prior_width * math.atanh(raw / cfg.prior_strength)

    # ------------------------------------------------------------------ groups
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``geometry`` (density hash grid + MLP) and ``color`` (colour hash grid + MLP)."""
        return {"geometry": list(self.density_net.parameters()), "color": list(self.color_net.parameters())}

    def render_input(self) -> NeRF:
        self.ensure_initialized()
        return self

    # ------------------------------------------------------------------ prior
    def ensure_initialized(self) -> None:
        """Sample the head SDF for the prior once (a loaded result already has it)."""
        if self._ready:
            return
        if not bool(self.initialized):
            assert self.prior_sdf is not None
            v, f = head_mesh_arrays(_head_of(self._ctx))
            # Exact distances are needed where tanh(-sdf / width) is not saturated and within a
            # grid cell or two of the surface; beyond, the (over-)estimate only deepens saturation.
            cell = 2 * self.cfg.bound / (self.cfg.prior_resolution - 1)
            band = max(3 * self.cfg.prior_width + abs(self.prior_shift), 2 * cell)
            grid = SDFGrid.from_mesh(v, f, self.cfg.prior_resolution, half_size=self.cfg.bound, band=band)
            with torch.no_grad():
                self.prior_sdf.values.copy_(grid.values)
                self.initialized.fill_(True)
        self._ready = True

    def prior(self, x: Tensor) -> Tensor:
        """The density prior [N] (before the activation) at world points ``x`` [N,3]."""
        cfg = self.cfg
        if cfg.density_prior == "sphere":
            return cfg.prior_strength * (1.0 - x.norm(dim=-1) / cfg.prior_radius)
        if cfg.density_prior == "head":
            self.ensure_initialized()
            assert self.prior_sdf is not None
            return cfg.prior_strength * torch.tanh((self.prior_shift - self.prior_sdf(x)) / cfg.prior_width)
        return x.new_zeros(x.shape[0])

    # ------------------------------------------------------------------ field protocol
    def to_unit(self, x: Tensor) -> Tensor:
        return (x / self.cfg.bound + 1.0) * 0.5

    def _inside(self, x: Tensor) -> Tensor:
        return (x.abs() <= self.cfg.bound).all(dim=-1)

    def raw_density(self, x: Tensor) -> Tensor:
        """``h + density_bias + prior`` [N] (before the activation)."""
        h = self.density_net(self.to_unit(x))[:, 0]
        return h + self.cfg.density_bias + self.prior(x)

    def _activate(self, raw: Tensor, x: Tensor) -> Tensor:
        if self.cfg.density_activation == "softplus":
            sigma = F.softplus(raw)
        else:
            sigma = torch.exp(raw.clamp(max=15.0))
        return torch.where(self._inside(x), sigma, torch.zeros_like(sigma))

    def density(self, x: Tensor) -> Tensor:
        """Densities sigma >= 0 [N] at world points ``x`` [N,3]."""
        return self._activate(self.raw_density(x), x)

    def color(self, x: Tensor) -> Tensor:
        """Colours [N, color_channels] at world points ``x`` [N,3]."""
        c = self.color_net(self.to_unit(x))
        return torch.sigmoid(c) if self.cfg.color_activation == "sigmoid" else c

    def density_and_color(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.density(x), self.color(x)

    def normal(self, x: Tensor) -> Tensor:
        """Unit normals [N,3]: ``-grad(sigma) / |grad(sigma)|`` (differentiable when grad is on)."""
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            sigma = self.density(xg)
            (g,) = torch.autograd.grad(sigma.sum(), xg, create_graph=create)
        return -F.normalize(g, dim=-1, eps=1e-12)

    # ------------------------------------------------------------------ meshing
    @torch.no_grad()
    def density_on_grid(self, resolution: int, center: Tensor, half: float, chunk: int = 131072) -> Tensor:
        """Densities at the vertices of the tet grid of ``resolution`` in the box ``center +- half``."""
        self.ensure_initialized()
        dev = next(self.parameters()).device
        grid = tet_grid(resolution, dev)
        pts = center.to(dev) + half * grid.vertices
        return torch.cat([self.density(c) for c in pts.split(chunk)], dim=0)

    @torch.no_grad()
    def extract_mesh(self, resolution: int = 128, threshold: float | None = None) -> Mesh:
        """The ``sigma = threshold`` surface by marching tetrahedra over the whole cube."""
        thr = self.cfg.mesh_threshold if threshold is None else threshold
        dev = next(self.parameters()).device
        center = torch.zeros(3, device=dev)
        sigma = self.density_on_grid(resolution, center, self.cfg.bound)
        grid = tet_grid(resolution, dev)
        sdf = torch.where(grid.boundary_mask, sigma.new_tensor(1.0), thr - sigma)
        pos = center + self.cfg.bound * grid.vertices
        verts, faces = marching_tets(pos, sdf, grid.surface_tets(sdf < 0))
        if faces.shape[0] == 0:
            raise HeadgenError(
                f"nerf: no surface at density {thr}; lower the threshold "
                f"(max density {float(sigma.max()):.3g})"
            )
        return Mesh(verts, faces)

    @torch.no_grad()
    def export_mesh(
        self, texture_size: int | None = None, resolution: int | None = None, threshold: float | None = None
    ) -> tuple[Mesh, Tensor]:
        """(mesh with UVs, baked colour texture [h,w,3]) of the ``mesh_threshold`` surface."""
        texture_size = texture_size or self.cfg.export_texture_size
        resolution = resolution or self.cfg.export_resolution
        if self.cfg.color_channels != 3:
            raise HeadgenError(
                "nerf: export_mesh bakes an RGB texture; this field has "
                f"{self.cfg.color_channels} colour channels"
            )
        return textured_mesh(self.extract_mesh(resolution, threshold), self.color, texture_size,
                             method=self.cfg.export_unwrap)

    def export_surface(self) -> SurfaceGeometry:
        """What the exporters write: the density surface, UV-mapped, with its baked colour map."""
        mesh, texture = self.export_mesh()
        return SurfaceGeometry(mesh=mesh, albedo_map=texture)

    @torch.no_grad()
    def metrics(self, ctx: RunContext) -> dict[str, float]:
        """Under the demo prior, the ground-truth scores of the surface this NeRF hands on.

        The pipeline scores representations that render as surfaces; a NeRF is scored here through
        its ``mesh_threshold`` surface (extracted at ``export_resolution``, coloured by the colour
        field), which is the surface export and the nerf-to-dmtet conversion use."""
        world = getattr(ctx, "state", {}).get("demo_world") if ctx is not None else None
        if world is None or self.cfg.color_channels != 3:
            return {}
        from headgen.prior.demo.metrics import surface_scores

        try:
            mesh = self.extract_mesh(self.cfg.export_resolution)
        except HeadgenError:  # an empty field is a score (nothing of the target covered), not a crash here
            return {"silhouette_iou": 0.0}
        scores = surface_scores(SurfaceGeometry(mesh=mesh, albedo_fn=self.color), world)
        return {k: round(v, 5) for k, v in scores.items()}

    def load_from(self, previous: Representation) -> None:
        """Same type: copy every tensor (network sizes and the prior must match)."""
        try:
            super().load_from(previous)
        except RuntimeError as exc:
            raise ConfigError(
                "nerf: the previous stage's NeRF has other encodings, MLP sizes or density prior than this "
                f"one; keep them equal to continue it ({exc})"
            ) from exc

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._ready = False
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


__all__ = ["NeRF"]
