"""DreamFace's PBR stage: specular and normal maps from the diffuse texture latent.

DreamFace trains two extra decoders, D_s and D_n, that map the diffuse latent to a specular and a
normal map, then restores and super-resolves the maps with external models. Those weights are not
public, so each is a slot here: ``specular_decoder`` / ``normal_decoder`` name a model (a VAE-layout
folder under ``models:``) whose decoder is applied to the latent; without one, an analytic
stand-in is used and labelled as such in the run's metrics (``pbr/specular_source``). The
resulting normal map is blended with the carved detail normal map (whiteout blend).

Then the maps are brought to ``upscale_size`` (the paper: 4096, "Texture Augmentation", Sec. 5.3):
with a super-resolution model when ``upscale_model`` names one (Real-ESRGAN, the paper's, or the
Stable Diffusion x4 upscaler; ``headgen/models/upscale.py``), else with a Lanczos resize; the
run's metrics say which (``pbr/upscale``). Departures: the paper fine-tunes Real-ESRGAN on its own
4K scans, whose weights are not public; the public photo weights are made for photographs, so by
default they enlarge only the diffuse and specular maps and the normal map is resized with
Lanczos and renormalised (``model_maps``). The paper's face restoration (RestoreFormer, fine-tuned
at 512 px) is not implemented: configuring it is an error that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import ConfigError, HeadgenError
from headgen.models.upscale import lanczos
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


class FaceRestorationNotImplemented(HeadgenError, NotImplementedError):
    """Face restoration was configured; this port has none (a user error: the message says what to drop)."""


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
        upscale_size: int | None = 2048
        """Pixel size the diffuse, specular and normal maps end at; null keeps the decoded maps' size.
        DreamFace's is 4096; 2048 (4x the decoded 512, one x4 Real-ESRGAN pass) costs a quarter of its
        memory and disk (methods/dreamface.yaml has the measurements)."""
        upscale_model: str | None = None
        """Super-resolution model under models: (kind realesrgan, e.g. realesrgan_x4plus, or sd-upscale,
        e.g. sd_x4_upscaler) for the maps in ``model_maps``; null: Lanczos for every map."""
        model_maps: list[Literal["diffuse", "specular", "normal"]] = field(
            default_factory=lambda: ["diffuse", "specular"])
        """The maps the model enlarges; the others are Lanczos-resized. Photo models would treat a normal
        map's encoded directions as colours, so normals are left out unless a model was trained on them."""
        tile: int | None = None
        """Input pixels per model window (null: 256 for Real-ESRGAN, 128 for the SD upscaler); memory
        follows the window, not the map. A multiple of 8."""
        tile_pad: int = 16
        """Context pixels around each window (a multiple of 8); Real-ESRGAN keeps only the core, the SD
        upscaler blends the overlaps."""
        sd_steps: int = 20
        """Denoising steps of the SD upscaler (per window)."""
        sd_noise_level: int = 20
        """Noise the SD upscaler adds to its low-resolution input (0..max_noise_level, 350)."""
        sd_guidance_scale: float = 9.0
        """Classifier-free guidance of the SD upscaler, with the run's prompt (1 or less: none, half the cost)."""
        face_restoration: str | None = None
        """DreamFace restores the maps with RestoreFormer before super-resolution: not implemented."""

        def __post_init__(self) -> None:
            if self.face_restoration is not None:
                raise FaceRestorationNotImplemented(
                    f"dreamface-pbr: face_restoration={self.face_restoration!r}: face restoration (RestoreFormer, "
                    "DreamFace Sec. 5.3) is not implemented: no loader for its weights exists here. Remove the "
                    "option (the maps are then only super-resolved)")
            if self.upscale_size is not None and not 8 <= self.upscale_size <= 16384:
                raise ValueError(f"upscale_size must be 8 to 16384 px (DreamFace: 4096), got {self.upscale_size}")
            if self.upscale_model is not None and self.upscale_size is None:
                raise ValueError(f"upscale_model={self.upscale_model} needs upscale_size (e.g. 4096)")
            if self.tile is not None and (self.tile < 8 or self.tile % 8):
                raise ValueError(f"tile must be a positive multiple of 8, got {self.tile}")
            if self.tile_pad < 0 or self.tile_pad % 8:
                raise ValueError(f"tile_pad must be a multiple of 8 (0 allowed), got {self.tile_pad}")
            if len(set(self.model_maps)) != len(self.model_maps):
                raise ValueError(f"model_maps lists a map twice: {self.model_maps}")

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
        ctx.metrics["pbr/texture_size"] = size  # the decoded maps' size, before upscaling
        return self._upscaled(rep, ctx)

    def _upscaled(self, rep: ParametricMesh, ctx: RunContext) -> ParametricMesh:
        """``rep`` again with its diffuse, specular and normal maps at ``upscale_size`` (or ``rep`` itself)."""
        target = self.cfg.upscale_size
        if target is None or (target == rep.albedo.shape[0] == rep.normal_map.shape[0] and not self.cfg.upscale_model):
            ctx.metrics["pbr/upscale"] = "none"
            ctx.metrics["pbr/upscale_size"] = rep.albedo.shape[0]
            return rep
        model = self._upscaler(ctx) if self.cfg.upscale_model else None
        state = {k: v.detach().cpu() for k, v in rep.state_dict().items()}
        maps = {"diffuse": ("albedo", state["albedo"]), "specular": ("specular_map", state["specular_map"]),
                # to [0,1] so that models and the clamp see colours; decoded back below
                "normal": ("normal_map", F.normalize(state["normal_map"], dim=-1) * 0.5 + 0.5)}
        methods = {}
        for name, (key, image) in maps.items():
            if model is not None and name in self.cfg.model_maps:
                out = model.upscale(image, target, desc=f"pbr {name} map ({model.label})")
                methods[name] = model.label
            else:
                out = lanczos(image, target)  # Lanczos overshoots a little: clamped below
                methods[name] = "lanczos"
            state[key] = F.normalize(out * 2 - 1, dim=-1) if name == "normal" else out.clamp(0, 1)
        big = ParametricMesh(replace(rep.cfg, texture_size=target, normal_map_size=target), ctx)
        big.load_state_dict(state)
        used = {m for m in methods.values() if m != "lanczos"}
        ctx.metrics["pbr/upscale"] = used.pop() if used else "lanczos"
        ctx.metrics["pbr/upscale_size"] = target
        for name, method in methods.items():
            ctx.metrics[f"pbr/upscale_{name}"] = method
        ctx.log(f"pbr: maps {rep.albedo.shape[0]} -> {target} px ("
                + ", ".join(f"{name}: {method}" for name, method in methods.items()) + ")")
        return big.to(ctx.device)

    def _upscaler(self, ctx: RunContext) -> Any:
        from headgen.models.upscale import load_upscaler

        name = self.cfg.upscale_model
        if name not in ctx.config.models:
            raise ConfigError(f"dreamface-pbr: unknown upscale_model '{name}'; define it under models: "
                              "(configs/models.yaml has realesrgan_x4plus and sd_x4_upscaler)")
        c = self.cfg
        return load_upscaler(name, ctx.config.models[name], ctx.device, tile=c.tile, pad=c.tile_pad,
                             prompt=ctx.config.prompt, negative_prompt=ctx.config.negative_prompt, steps=c.sd_steps,
                             noise_level=c.sd_noise_level, guidance_scale=c.sd_guidance_scale, seed=ctx.config.seed)


def _resize(image: Tensor, size: int) -> Tensor:
    if image.shape[0] == size:
        return image
    x = F.interpolate(image.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0)
