"""NeRF -> DMTet conversion (HeadSculpt's coarse-to-fine hand-over).

1. Box: with ``box: auto`` the DMTet box is fitted around the region where the NeRF's density
   exceeds ``threshold`` (probed on a ``probe_resolution`` grid over the NeRF cube) plus
   ``margin``; with ``box: config`` the DMTet config's ``center``/``half_size`` are used.
2. Geometry: the density is sampled at the DMTet grid vertices and ``threshold - sigma`` is
   meshed by marching tetrahedra (the NeRF's ``sigma = threshold`` surface). ``sdf: redistance``
   (default) then initialises the DMTet from the true signed distance to that mesh (a proper SDF
   scale for the following optimisation; a ``hashgrid`` DMTet is fitted for its ``init_steps``);
   ``sdf: density`` puts ``(threshold - sigma) * density_scale`` directly on the vertices (``direct``
   geometry only), which keeps the exact zero crossings but not an SDF's scale.
3. Colour: ``color: distill`` fits the DMTet colour field to the NeRF colour at points on and
   near that surface (``distill_steps`` Adam steps of ``distill_points`` points); ``fresh``
   leaves it at its initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from headgen.errors import ConfigError, HeadgenError
from headgen.geometry.marching_tets import marching_tets
from headgen.geometry.tets import tet_grid
from headgen.registry import register
from representations.dmtet import DMTet, SDFTarget
from representations.nerf import NeRF

if TYPE_CHECKING:
    from headgen.context import RunContext


def _dmtet_defaults() -> DMTet.Config:
    return DMTet.Config(init="none")


@register("converter", "nerf-to-dmtet")
class NeRFToDMTet:
    """Convert a NeRF into a DMTet: density threshold -> SDF, colour distilled from the NeRF."""

    @dataclass
    class Config:
        dmtet: DMTet.Config = field(default_factory=_dmtet_defaults)
        """The DMTet to build (resolution, geometry, colour field, mode); its init is ignored."""
        threshold: float = 5.0
        """NeRF density at the surface."""
        box: Literal["auto", "config"] = "auto"
        """auto: fit the DMTet box around the NeRF's occupied region; config: dmtet.center/half_size."""
        margin: float = 0.05
        """Margin around the occupied region (box: auto), world units."""
        probe_resolution: int = 64
        """Grid on which the occupied region is found (box: auto)."""
        sdf: Literal["redistance", "density"] = "redistance"
        """redistance: signed distance to the threshold surface; density: (threshold - sigma) * scale."""
        density_scale: float = 0.01
        """Scale of threshold - sigma when sdf: density."""
        color: Literal["distill", "fresh"] = "distill"
        """distill: fit the colour field to the NeRF's colour near the surface; fresh: leave it."""
        distill_steps: int = 300
        """Adam steps of the colour distillation."""
        distill_points: int = 8192
        """Points per distillation step."""
        distill_lr: float = 1.0e-2
        """Learning rate of the colour distillation."""

    def __init__(self, cfg: Config, ctx: RunContext | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx
        if cfg.sdf == "density" and cfg.dmtet.geometry != "direct":
            raise ConfigError("converter.sdf: density needs dmtet.geometry: direct; use sdf: redistance")

    @torch.no_grad()
    def _auto_box(self, nerf: NeRF) -> tuple[torch.Tensor, float]:
        cfg = self.cfg
        bound = nerf.cfg.bound
        dev = next(nerf.parameters()).device
        sigma = nerf.density_on_grid(cfg.probe_resolution, torch.zeros(3, device=dev), bound)
        pts = bound * tet_grid(cfg.probe_resolution, dev).vertices
        occupied = pts[sigma > cfg.threshold]
        if occupied.shape[0] == 0:
            raise HeadgenError(
                f"nerf-to-dmtet: the NeRF has no density above threshold {cfg.threshold} "
                f"(max {float(sigma.max()):.3g}); lower converter.threshold"
            )
        cell = 2 * bound / cfg.probe_resolution
        lo = occupied.min(0).values - cell
        hi = occupied.max(0).values + cell
        center = (lo + hi) / 2
        half = float((hi - lo).max() / 2 + cfg.margin)
        return center, half

    def convert(self, previous: Any, ctx: RunContext | None = None) -> DMTet:
        if not isinstance(previous, NeRF):
            raise ConfigError(
                f"nerf-to-dmtet converts a nerf representation, but the previous stage left "
                f"{getattr(previous, 'registered_name', type(previous).__name__)}"
            )
        cfg = self.cfg
        nerf = previous
        nerf.ensure_initialized()
        dev = next(nerf.parameters()).device
        dm = DMTet(replace(cfg.dmtet, init="none"), ctx if ctx is not None else self.ctx).to(dev)
        with torch.no_grad():
            if cfg.box == "auto":
                center, half = self._auto_box(nerf)
                dm.box_center.copy_(center)
                dm.box_half.fill_(half)
            grid = tet_grid(dm.cfg.resolution, dev)
            sigma = nerf.density_on_grid(dm.cfg.resolution, dm.box_center, float(dm.box_half))
            sdf0 = torch.where(grid.boundary_mask, sigma.new_tensor(1.0), cfg.threshold - sigma)
            verts, faces = marching_tets(dm.grid_vertices(), sdf0, grid.surface_tets(sdf0 < 0))
        if faces.shape[0] == 0:
            raise HeadgenError(
                f"nerf-to-dmtet: no surface at density {cfg.threshold} inside the DMTet box; lower the "
                "threshold or use box: auto"
            )
        target = SDFTarget.mesh(verts.cpu(), faces.cpu(), band=max(0.05, 4 * dm.cell_size()))
        if cfg.sdf == "density":
            with torch.no_grad():
                dm.sdf.copy_(sdf0 * cfg.density_scale)
                if dm.deform is not None:
                    dm.deform.zero_()
                dm.initialized.fill_(True)
        else:
            dm.fit_sdf(target)
        if cfg.color == "distill":
            self.distill_color(nerf, dm, target)
        dm._cache = None
        return dm

    def distill_color(self, nerf: NeRF, dm: DMTet, target: SDFTarget, seed: int = 0) -> float:
        """Fit ``dm``'s colour field to ``nerf.color`` near the surface; returns the final MSE."""
        cfg = self.cfg
        if nerf.cfg.color_channels != 3:
            raise ConfigError(
                "nerf-to-dmtet: color: distill needs an RGB NeRF (color_channels: 3); use color: fresh"
            )
        dev = dm.box_half.device
        gen = torch.Generator().manual_seed(seed)
        n_pool = max(cfg.distill_points * 8, 65536)
        surf = target.surface(n_pool, gen).float()
        pool = (surf + torch.randn(n_pool, 3, generator=gen) * dm.cell_size()).to(dev)
        with torch.no_grad():
            goal = torch.cat([nerf.color(c) for c in pool.split(65536)], dim=0)
        params = list(dm.color_net.parameters())
        was = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=cfg.distill_lr, betas=(0.9, 0.99), eps=1e-15)
        loss = torch.zeros(())
        with torch.enable_grad():
            for _ in range(cfg.distill_steps):
                idx = torch.randint(0, n_pool, (cfg.distill_points,), generator=gen).to(dev)
                loss = F.mse_loss(dm.albedo(pool[idx]), goal[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        for p, w in zip(params, was):
            p.requires_grad_(w)
        return float(loss.detach())


__all__ = ["NeRFToDMTet"]
