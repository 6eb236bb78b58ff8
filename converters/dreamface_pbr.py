"""DreamFace's PBR stage: specular and normal maps from the diffuse texture latent.

DreamFace trains two extra decoders, D_s and D_n, that map the diffuse latent to a specular and a
normal map, then restores and super-resolves the maps with external models. Those weights are not
public, so each is a slot here: ``specular_decoder`` / ``normal_decoder`` name a model (a VAE-layout
folder under ``models:``) whose decoder is applied to the latent; without one, an analytic
stand-in is used and labelled as such in the run's metrics (``pbr/specular_source``). The
resulting normal map is blended with the carved detail normal map (whiteout blend). ``upscale``
is the super-resolution plug point (identity only for now).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import ConfigError
from headgen.registry import register
from representations.parametric_mesh import ParametricMesh

if TYPE_CHECKING:
    from headgen.context import RunContext

LUMA = torch.tensor([0.299, 0.587, 0.114])


def analytic_specular(albedo: Tensor) -> Tensor:
    """Stand-in for D_s: brighter where skin is lighter and less saturated ([T,T,1] in [0,1])."""
    luma = (albedo * LUMA.to(albedo)).sum(-1, keepdim=True)
    sat = albedo.max(-1, keepdim=True).values - albedo.min(-1, keepdim=True).values
    return (0.08 + 0.35 * luma * (1.0 - sat)).clamp(0.0, 1.0)


def analytic_normal(albedo: Tensor, strength: float = 2.0) -> Tensor:
    """Stand-in for D_n: a bump map from the blurred luminance, as tangent-space unit normals [T,T,3]
    (OpenGL green-up: +v is up the image)."""
    luma = (albedo * LUMA.to(albedo)).sum(-1)[None, None]
    luma = F.avg_pool2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    size = luma.shape[-1]
    du = (torch.roll(luma, -1, -1) - torch.roll(luma, 1, -1))[0, 0] * 0.5 * size / 64
    dv = -(torch.roll(luma, -1, -2) - torch.roll(luma, 1, -2))[0, 0] * 0.5 * size / 64  # rows run down, v up
    n = torch.stack([-strength * du, -strength * dv, torch.ones_like(du)], -1)
    return F.normalize(n, dim=-1)


def whiteout_blend(base: Tensor, detail: Tensor) -> Tensor:
    """Blend two tangent-space unit normal maps (whiteout): xy add, z multiply."""
    n = torch.cat([base[..., :2] + detail[..., :2], (base[..., 2:] * detail[..., 2:])], -1)
    return F.normalize(n, dim=-1)


@register("converter", "dreamface-pbr")
class DreamFacePBR:
    """DreamFace PBR maps: specular + normal from the diffuse latent (decoder slots or analytic stand-ins)."""

    @dataclass
    class Config:
        specular_decoder: str | None = None
        """Model (under models:, VAE layout) decoding the latent to a specular map; null: analytic stand-in."""
        normal_decoder: str | None = None
        """Model decoding the latent to a normal map; null: analytic stand-in."""
        normal_strength: float = 2.0
        """Bump strength of the analytic normal stand-in."""
        upscale: Literal["identity"] = "identity"
        """Super-resolution plug point (DreamFace upscales to 4K with external models)."""

    def __init__(self, cfg: Config, ctx: RunContext | None = None):
        self.cfg = cfg

    def _decoder(self, name: str, ctx: RunContext) -> Any:
        from headgen.models.zoo import load_component

        if name not in ctx.config.models:
            raise ConfigError(f"dreamface-pbr: unknown model '{name}'; define it under models:")
        return load_component(name, ctx.config.models[name], "vae", ctx.device)

    def _decode(self, name: str, latent: Tensor, ctx: RunContext) -> Tensor:
        vae = self._decoder(name, ctx)
        scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        x = vae.decode((latent[None] / scale).to(next(vae.parameters()).dtype)).sample.float()
        return ((x[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0)

    @torch.no_grad()
    def convert(self, previous: Any, ctx: RunContext) -> ParametricMesh:
        if not isinstance(previous, ParametricMesh) or previous.albedo is None:
            raise ConfigError("dreamface-pbr needs a parametric-mesh with an albedo texture (texture: rgb or both)")
        cfg = replace(previous.cfg, specular=True, albedo_from_latent=False,
                      normal_map_size=previous.cfg.normal_map_size or previous.cfg.texture_size)
        rep = ParametricMesh(cfg, ctx)
        rep.load_from(previous)
        rep = rep.to(ctx.device)
        albedo = previous.albedo.detach().clamp(0, 1)
        size = albedo.shape[0]
        sources = {}
        if self.cfg.specular_decoder and previous.latent is not None:
            spec = self._decode(self.cfg.specular_decoder, previous.latent, ctx).mean(-1, keepdim=True)
            sources["specular_source"] = f"decoder:{self.cfg.specular_decoder}"
        else:
            spec = analytic_specular(albedo)
            sources["specular_source"] = "analytic stand-in (no D_s weights)"
        if self.cfg.normal_decoder and previous.latent is not None:
            pbr_normal = F.normalize(self._decode(self.cfg.normal_decoder, previous.latent, ctx) * 2 - 1, dim=-1)
            sources["normal_source"] = f"decoder:{self.cfg.normal_decoder}"
        else:
            pbr_normal = analytic_normal(albedo, self.cfg.normal_strength)
            sources["normal_source"] = "analytic stand-in (no D_n weights)"
        rep.specular_map.copy_(_resize(spec, rep.specular_map.shape[0]))
        detail = F.normalize(previous.normal_map.detach(), dim=-1) if previous.normal_map is not None else None
        n = rep.normal_map.shape[0]
        pbr_normal = _resize(pbr_normal, n)
        combined = pbr_normal if detail is None else whiteout_blend(_resize(detail, n), pbr_normal)
        rep.normal_map.copy_(combined)
        for key, value in sources.items():
            ctx.metrics[f"pbr/{key}"] = value
        ctx.metrics["pbr/texture_size"] = size
        return rep


def _resize(image: Tensor, size: int) -> Tensor:
    if image.shape[0] == size:
        return image
    x = F.interpolate(image.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0)
