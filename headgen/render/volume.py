"""NeRF volume rendering in pure PyTorch.

Rays go through pixel centres (:func:`headgen.cameras.pixel_rays`), are clipped to a bounding
sphere at the origin (or to ``[near, far]``), sampled with stratified jitter drawn from the
caller's generator (the bin midpoints when no generator is given, for deterministic evaluation),
optionally resampled hierarchically from the coarse weights, and alpha-composited:
``alpha_i = 1 - exp(-sigma_i * delta_i)``, ``w_i = alpha_i * prod_{j<i} (1 - alpha_j)``.

Normals are ``-grad(sigma) / |grad(sigma)|`` by autograd on the density; the double-backward
graph is only built when gradients are enabled and ``normal_grad`` is true (normals then take part
in the loss, e.g. through Lambert shading or a normal-map guidance).

The occupancy-grid acceleration of nerfacc is not used: every ray gets the same number of samples,
which keeps this renderer dependency-free and exactly reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from headgen.cameras import Cameras, Lights, pixel_rays
from headgen.errors import HeadgenError
from headgen.registry import register

MODES: tuple[str, ...] = ("rgb", "opacity", "depth", "normal")


@runtime_checkable
class RadianceField(Protocol):
    """What the volume renderer draws. Optionally also ``density_and_color(x) -> (sigma, rgb)``,
    used instead of the two calls when both are needed (one shared feature pass)."""

    def density(self, x: Tensor) -> Tensor:
        """Densities sigma >= 0 [N] at world points ``x`` [N,3]."""
        ...

    def color(self, x: Tensor) -> Tensor:
        """Colours [N,C] at ``x`` [N,3] (C = 3 for RGB; any C, e.g. 4 for a latent field)."""
        ...


@register("renderer", "volume")
class VolumeRenderer:
    """NeRF volume renderer (pure PyTorch): stratified + hierarchical sampling, alpha compositing."""

    @dataclass
    class Config:
        resolution: int | None = None
        """Image height in pixels (width keeps the cameras' aspect ratio); null = the cameras' size."""
        num_samples: int = 64
        """Stratified samples per ray."""
        num_importance: int = 0
        """Extra samples per ray drawn from the coarse weights (hierarchical resampling); 0 = off."""
        bound_radius: float | None = 1.0
        """Radius of the bounding sphere at the origin; rays are sampled only inside it and rays
        that miss it are empty. null: sample every ray on [near, far]."""
        near: float = 0.1
        """Smallest distance along a ray that is sampled."""
        far: float = 6.0
        """Largest distance along a ray (used only when bound_radius is null)."""
        background: Literal["black", "white", "random"] = "black"
        """Colour behind the volume; random draws one colour per image from the generator."""
        eval_background: Literal["black", "white"] = "white"
        """Used instead of background: random when render() gets no generator (evaluation)."""
        chunk_size: int = 8192
        """Rays evaluated at once; lower it if a large image runs out of memory."""
        shading: Literal["albedo", "lambert"] = "albedo"
        """albedo: rgb is the field's colour; lambert: colour * (ambient + light * max(0, n.l))."""
        normal_grad: bool = True
        """Let gradients flow through normals (double backward) when gradients are enabled."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        if cfg.num_samples < 1:
            raise HeadgenError(f"renderer.num_samples must be >= 1, got {cfg.num_samples}")
        if cfg.num_importance < 0:
            raise HeadgenError(f"renderer.num_importance must be >= 0, got {cfg.num_importance}")
        if cfg.chunk_size < 1:
            raise HeadgenError(f"renderer.chunk_size must be >= 1, got {cfg.chunk_size}")
        if cfg.resolution is not None and cfg.resolution < 1:
            raise HeadgenError(f"renderer.resolution must be >= 1 or null, got {cfg.resolution}")
        if cfg.bound_radius is not None and cfg.bound_radius <= 0:
            raise HeadgenError(f"renderer.bound_radius must be > 0 or null, got {cfg.bound_radius}")
        if cfg.near < 0 or (cfg.bound_radius is None and cfg.far <= cfg.near):
            raise HeadgenError(f"renderer: need 0 <= near < far, got near={cfg.near}, far={cfg.far}")

    def render(
        self,
        field: RadianceField,
        cameras: Cameras,
        lights: Lights | None = None,
        modes: tuple[str, ...] | list[str] = MODES,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Images [B,H,W,C] for each requested mode.

        ``rgb`` [.., C] (the field's channels, composited over the background), ``opacity``
        [.., 1] (sum of weights), ``depth`` [.., 1] (expected distance along the ray, sum w t,
        0 on the background), ``normal`` [.., 3] (world-space unit normals composited with the
        weights, in [-1, 1], 0 on the background). ``generator`` (CPU) jitters the samples and
        draws random backgrounds; without it sampling is deterministic. ``lights`` defaults to a
        headlight (``Lights.headlight``) when shading is lambert.
        """
        cfg = self.cfg
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise HeadgenError(
                f"renderer 'volume' cannot render {unknown}; it renders {', '.join(MODES)}"
            )
        need_color = "rgb" in modes
        shade = need_color and cfg.shading == "lambert"
        need_normals = "normal" in modes or shade
        if shade and lights is None:
            lights = Lights.headlight(cameras)

        h = cfg.resolution or cameras.height
        w = round(h * cameras.width / cameras.height) if cfg.resolution else cameras.width
        origins, dirs = pixel_rays(cameras, h, w)
        b = cameras.batch_size
        dev = origins.device
        origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        light = None
        if shade:
            assert lights is not None
            light = tuple(
                t.to(dev)[:, None, :].expand(b, h * w, 3).reshape(-1, 3)
                for t in (lights.direction, lights.color, lights.ambient)
            )

        pieces: dict[str, list[Tensor]] = {}
        for start in range(0, origins.shape[0], cfg.chunk_size):
            sl = slice(start, start + cfg.chunk_size)
            chunk_light = None if light is None else tuple(t[sl] for t in light)
            out = self._render_rays(
                field, origins[sl], dirs[sl], chunk_light, need_color, need_normals, generator
            )
            for k, v in out.items():
                pieces.setdefault(k, []).append(v)
        flat = {k: torch.cat(v, dim=0) for k, v in pieces.items()}

        result: dict[str, Tensor] = {}
        opacity = flat["opacity"].reshape(b, h, w, 1)
        if need_color:
            rgb = flat["rgb"].reshape(b, h, w, -1)
            bg = self._background(b, rgb.shape[-1], generator).to(dev)
            result["rgb"] = rgb + (1.0 - opacity) * bg[:, None, None, :]
        if "opacity" in modes:
            result["opacity"] = opacity
        if "depth" in modes:
            result["depth"] = flat["depth"].reshape(b, h, w, 1)
        if "normal" in modes:
            result["normal"] = flat["normal"].reshape(b, h, w, 3)
        return result

    __call__ = render

    def _background(self, b: int, c: int, generator: torch.Generator | None) -> Tensor:
        kind = self.cfg.background
        if kind == "random" and generator is None:
            kind = self.cfg.eval_background
        if kind == "random":
            assert generator is not None
            return torch.rand(b, c, generator=generator)
        return torch.full((b, c), 1.0 if kind == "white" else 0.0)

    def _bounds(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-ray near, far [R] and a hit mask [R]."""
        cfg = self.cfg
        if cfg.bound_radius is None:
            near = torch.full_like(o[:, 0], cfg.near)
            return near, torch.full_like(near, cfg.far), torch.ones_like(near, dtype=torch.bool)
        # |o + t d|^2 = r^2 with |d| = 1.
        half_b = (o * d).sum(-1)
        c = (o * o).sum(-1) - cfg.bound_radius**2
        disc = half_b**2 - c
        root = torch.sqrt(disc.clamp_min(0.0))
        near = torch.clamp(-half_b - root, min=cfg.near)
        far = -half_b + root
        hit = (disc > 0) & (far > near)
        # Missed rays get an empty interval, so every delta (and weight) is zero.
        far = torch.where(hit, far, near)
        return near, far, hit

    def _render_rays(
        self,
        field: RadianceField,
        o: Tensor,
        d: Tensor,
        light: tuple[Tensor, Tensor, Tensor] | None,
        need_color: bool,
        need_normals: bool,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        cfg = self.cfg
        r = o.shape[0]
        near, far, hit = self._bounds(o, d)
        s = cfg.num_samples
        if generator is None:
            jitter = torch.full((r, s), 0.5, device=o.device)
        else:
            jitter = torch.rand(r, s, generator=generator).to(o.device)
        frac = (torch.arange(s, device=o.device) + jitter) / s
        t = near[:, None] + (far - near)[:, None] * frac  # [R,S], sorted

        if cfg.num_importance > 0:
            with torch.no_grad():
                x = o[:, None, :] + t[..., None] * d[:, None, :]
                sigma = _check_density(field.density(x.reshape(-1, 3)), r * s).reshape(r, s)
                edges = _segment_edges(t, near, far)
                weights = _weights(sigma * hit[:, None], edges.diff(dim=-1))
                t_fine = _sample_pdf(edges, weights, cfg.num_importance, generator)
            t = torch.sort(torch.cat([t, t_fine], dim=-1), dim=-1).values

        n = t.shape[1]
        x = (o[:, None, :] + t[..., None] * d[:, None, :]).reshape(-1, 3)
        outer_grad = torch.is_grad_enabled()
        normal = None
        if need_normals:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                sigma, color = _query(field, x, need_color)
                create = outer_grad and cfg.normal_grad
                (grad,) = torch.autograd.grad(
                    sigma.sum(), x, create_graph=create, retain_graph=outer_grad, allow_unused=True
                )
            if grad is None:  # density independent of position: no defined normal
                grad = torch.zeros_like(x)
            if not outer_grad:
                sigma = sigma.detach()
                color = None if color is None else color.detach()
                grad = grad.detach()
            normal = -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            normal = normal.reshape(r, n, 3)
        else:
            sigma, color = _query(field, x, need_color)

        sigma = sigma.reshape(r, n) * hit[:, None]
        edges = _segment_edges(t, near, far)
        weights = _weights(sigma, edges.diff(dim=-1))  # [R,n]
        out = {
            "opacity": weights.sum(-1, keepdim=True),
            "depth": (weights * t).sum(-1, keepdim=True),
        }
        if need_color:
            assert color is not None
            color = color.reshape(r, n, -1)
            if light is not None:
                assert normal is not None
                direction, strength, ambient = light
                if color.shape[-1] != 3:
                    raise HeadgenError(
                        f"renderer.shading: lambert needs a 3-channel colour field, got {color.shape[-1]} "
                        "channels; use shading: albedo"
                    )
                lambert = (normal * direction[:, None, :]).sum(-1, keepdim=True).clamp_min(0.0)
                color = color * (ambient[:, None, :] + strength[:, None, :] * lambert)
            out["rgb"] = (weights[..., None] * color).sum(1)
        if normal is not None:
            out["normal"] = (weights[..., None] * normal).sum(1)
        return out


def _query(field: RadianceField, x: Tensor, need_color: bool) -> tuple[Tensor, Tensor | None]:
    if need_color and hasattr(field, "density_and_color"):
        sigma, color = field.density_and_color(x)  # type: ignore[attr-defined]
    else:
        sigma = field.density(x)
        color = field.color(x) if need_color else None
    sigma = _check_density(sigma, x.shape[0])
    if color is not None and (color.dim() != 2 or color.shape[0] != x.shape[0]):
        raise ValueError(f"field colour must be [N,C] for {x.shape[0]} points, got {tuple(color.shape)}")
    return sigma, color


def _check_density(sigma: Tensor, n: int) -> Tensor:
    if sigma.numel() != n:
        raise ValueError(f"field density must be [N] for {n} points, got {tuple(sigma.shape)}")
    return sigma.reshape(n)


def _segment_edges(t: Tensor, near: Tensor, far: Tensor) -> Tensor:
    """[R,S+1] boundaries of the segment each sample stands for: halfway to its neighbours."""
    mid = 0.5 * (t[:, 1:] + t[:, :-1])
    return torch.cat([near[:, None], mid, far[:, None]], dim=-1)


def _weights(sigma: Tensor, delta: Tensor) -> Tensor:
    """Compositing weights [R,S] from densities and segment lengths."""
    tau = sigma * delta
    # Transmittance before each sample, as exp(-cumsum) for numerically stable gradients.
    trans = torch.exp(-torch.cumsum(tau, dim=-1) + tau)
    return trans * (1.0 - torch.exp(-tau))


def _sample_pdf(edges: Tensor, weights: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` distances per ray [R,n] by inverse transform sampling of the piecewise-constant pdf
    ``weights`` on the segments ``edges``; stratified midpoints when there is no generator."""
    r = weights.shape[0]
    pdf = weights + 1e-5  # keep empty rays (all zero weights) uniform
    pdf = pdf / pdf.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    cdf[:, -1] = 1.0
    if generator is None:
        u = ((torch.arange(n, device=edges.device) + 0.5) / n).expand(r, n)
    else:
        u = torch.rand(r, n, generator=generator).to(edges.device)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    e0, e1 = edges.gather(-1, idx - 1), edges.gather(-1, idx)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return e0 + frac * (e1 - e0)


__all__ = ["MODES", "RadianceField", "VolumeRenderer"]
