"""Enlarging texture maps: Lanczos resampling, and super-resolution models run tile by tile.

Two model families load here, each named under ``models:``:

- ``kind: realesrgan``: a Real-ESRGAN (RRDBNet) generator file (``headgen/models/realesrgan.py``),
  DreamFace's super-resolution model;
- ``kind: sd-upscale``: a diffusers ``StableDiffusionUpscalePipeline`` folder
  (``stabilityai/stable-diffusion-x4-upscaler`` or a local copy), loaded with ``from_pretrained``.

Models see the map in overlapping windows (``tiled``), so memory follows the window size, not the
map size; the output is assembled on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.config.recipe import ModelSpec
from headgen.errors import ConfigError, HeadgenError, ModelNotFoundError
from headgen.models.zoo import how_to_get, local_path, offline, torch_dtype

KINDS = ("realesrgan", "sd-upscale")
REALESRGAN_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases"


def lanczos(image: Tensor, size: int) -> Tensor:
    """[H,W,C] float map resized to [size,size,C] with a Lanczos (a=3) filter, channel by channel on float
    data (PIL mode F), so nothing is quantised. Values may overshoot at edges; callers clamp or renormalise."""
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    arr = image.detach().float().cpu().numpy()
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c])).resize((size, size), Image.Resampling.LANCZOS))
        for c in range(arr.shape[-1])
    ]
    return torch.from_numpy(np.stack(channels, -1)).to(image.device)


def window_weight(size: int, pad: int, feather: bool) -> Tensor:
    """[size,size] weight of one window's output: 1 on its core; on the ``pad`` border a linear ramp
    (feather: neighbouring windows blend) or 0 (the border is context only and is cut away)."""
    profile = torch.ones(size)
    if pad:
        edge = (torch.arange(pad) + 0.5) / pad if feather else torch.zeros(pad)
        profile[:pad] = edge
        profile[size - pad:] = edge.flip(0)
    return profile[:, None] * profile[None, :]


def tiled(fn: Callable[[Tensor], Tensor], image: Tensor, scale: int, tile: int, pad: int, *, feather: bool = False,
          desc: str = "upscale") -> Tensor:
    """``fn`` (a x``scale`` upscaler of [1,C,h,w] batches) applied to ``image`` [1,C,H,W] in windows of
    ``tile + 2 pad`` pixels that overlap by ``2 pad``; returns [1,C',H*scale,W*scale] on the CPU.

    Each window sees ``pad`` pixels of context around its ``tile`` x ``tile`` core (the map is extended
    by replicating its edge, so every window has the same size). Without ``feather`` only the core is
    kept (Real-ESRGAN's own tiling: exact when ``pad`` covers the model's receptive field); with it the
    borders blend linearly into the neighbours (for stochastic models, whose windows disagree)."""
    _, _, h, w = image.shape
    ny, nx = math.ceil(h / tile), math.ceil(w / tile)
    padded = F.pad(image, (pad, pad + nx * tile - w, pad, pad + ny * tile - h), mode="replicate")
    win, s = tile + 2 * pad, scale
    weight = window_weight(win * s, pad * s, feather)
    canvas_h, canvas_w = (ny * tile + 2 * pad) * s, (nx * tile + 2 * pad) * s
    out: Tensor | None = None
    total = torch.zeros(1, 1, canvas_h, canvas_w)
    from tqdm.auto import tqdm

    for iy, ix in tqdm(list(product(range(ny), range(nx))), desc=desc, unit="tile", leave=False, dynamic_ncols=True):
        y0, x0 = iy * tile, ix * tile
        result = fn(padded[..., y0:y0 + win, x0:x0 + win]).float().cpu()
        if result.shape[-2:] != (win * s, win * s):
            raise HeadgenError(f"{desc}: the model turned a {win}x{win} window into {tuple(result.shape[-2:])}, "
                               f"expected {win * s}x{win * s} (x{s})")
        if out is None:
            out = torch.zeros(1, result.shape[1], canvas_h, canvas_w)
        out[..., y0 * s:(y0 + win) * s, x0 * s:(x0 + win) * s] += result * weight
        total[..., y0 * s:(y0 + win) * s, x0 * s:(x0 + win) * s] += weight
    assert out is not None  # at least one window: h, w >= 1
    out /= total.clamp_min(1e-12)
    return out[..., pad * s:(pad + h) * s, pad * s:(pad + w) * s]


@dataclass
class ModelUpscaler:
    """A super-resolution model: ``fn`` maps [1,3,h,w] in [0,1] to [1,3,h*scale,w*scale]."""

    fn: Callable[[Tensor], Tensor]
    scale: int
    label: str
    """What summary.json records, e.g. ``realesrgan:realesrgan_x4plus``."""
    tile: int
    pad: int
    feather: bool

    def upscale(self, image: Tensor, size: int, desc: str = "upscale") -> Tensor:
        """[H,W,C] map in [0,1] (C = 1 or 3) -> [size,size,C].

        The model does the enlarging in whole passes (x scale each); Lanczos only fills the rest:
        the map is first resized to size / scale^passes (512 -> 1024 before a x4 pass to 4096), which
        costs 4x less than a second model pass at 2048 and a down-sampling. When one pass already
        overshoots (512 -> 1024 with x4), the model runs once and Lanczos brings it down."""
        h = image.shape[0]
        if size <= h:
            raise ConfigError(f"{self.label}: the map is {h} px already, nothing to enlarge to {size}")
        passes = max(1, int(math.floor(math.log(size / h) / math.log(self.scale) + 1e-9)))
        start = round(size / self.scale**passes)
        x = lanczos(image, start).clamp(0, 1) if start > h else image
        grey = x.shape[-1] == 1
        batch = (x.expand(-1, -1, 3) if grey else x).permute(2, 0, 1)[None].float()
        for p in range(passes):
            step = f"{desc} ({p + 1}/{passes})" if passes > 1 else desc
            batch = tiled(self.fn, batch, self.scale, self.tile, self.pad, feather=self.feather, desc=step).clamp(0, 1)
        out = batch[0].permute(1, 2, 0)
        out = out.mean(-1, keepdim=True) if grey else out
        return lanczos(out, size).clamp(0, 1).to(image.device)


def _realesrgan(name: str, spec: ModelSpec, device: torch.device, tile: int, pad: int) -> ModelUpscaler:
    from headgen.models.realesrgan import load_realesrgan, weight_file

    how = (f"download RealESRGAN_x4plus.pth ({REALESRGAN_RELEASES}, v0.1.0) and set models.{name}.local_dir to "
           "the file or to a folder holding it")
    if spec.local_dir:
        path = Path(spec.local_dir).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"models.{name}.local_dir={spec.local_dir} does not exist; {how}")
    else:
        found = local_path(spec)  # a Hub mirror already in the cache; never downloads
        if found is None:
            raise ModelNotFoundError(f"model '{name}' (Real-ESRGAN) is not on disk: {how}")
        path = found / spec.subfolder if spec.subfolder else found
    dtype = torch_dtype(spec, device)
    net = load_realesrgan(weight_file(path, name), device, dtype)

    def run(x: Tensor) -> Tensor:
        return net(x.to(device=device, dtype=dtype))

    return ModelUpscaler(run, net.scale, f"realesrgan:{name}", tile, pad, feather=False)


def _sd_upscale(name: str, spec: ModelSpec, device: torch.device, tile: int, pad: int, prompt: str,
                negative_prompt: str, steps: int, noise_level: int, guidance_scale: float, seed: int) -> ModelUpscaler:
    from diffusers import StableDiffusionUpscalePipeline

    source = str(Path(spec.local_dir).expanduser()) if spec.local_dir else spec.hub_id
    if spec.local_dir and not Path(source).is_dir():
        raise ModelNotFoundError(f"models.{name}.local_dir={spec.local_dir} does not exist; {how_to_get(name, spec)}")
    kwargs: dict[str, Any] = {"torch_dtype": torch_dtype(spec, device)}
    if spec.local_dir or offline():
        kwargs["local_files_only"] = True
    if spec.revision and not spec.local_dir:
        kwargs["revision"] = spec.revision
    if spec.variant:
        kwargs["variant"] = spec.variant
    if spec.subfolder:
        raise ConfigError(f"models.{name}.subfolder: a StableDiffusionUpscalePipeline loads from its folder's root")
    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{how_to_get(name, spec)} (loading StableDiffusionUpscalePipeline: "
                                 f"{' '.join(str(exc).split())[:300]})") from exc
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)  # one bar over the tiles instead of one per tile
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def run(x: Tensor) -> Tensor:
        return pipe(prompt=prompt, negative_prompt=negative_prompt or None, image=x.to(device),
                    num_inference_steps=steps, noise_level=noise_level, guidance_scale=guidance_scale,
                    generator=generator, output_type="pt").images

    # The pipeline's latents sit at the input resolution and its VAE decodes them x vae_scale_factor.
    return ModelUpscaler(run, int(pipe.vae_scale_factor), f"sd-upscale:{name}", tile, pad, feather=True)


def load_upscaler(name: str, spec: ModelSpec, device: torch.device | str, *, tile: int | None = None, pad: int = 16,
                  prompt: str = "", negative_prompt: str = "", steps: int = 20, noise_level: int = 20,
                  guidance_scale: float = 9.0, seed: int = 0) -> ModelUpscaler:
    """The super-resolution model ``models.<name>`` (kind realesrgan or sd-upscale).

    ``tile``: input pixels per window (None: 256 for Real-ESRGAN, 128 for the SD upscaler, its
    training size); ``pad``: context pixels on each side. The prompt and the diffusion options
    only concern the SD upscaler."""
    device = torch.device(device)
    if spec.kind == "realesrgan":
        return _realesrgan(name, spec, device, tile or 256, pad)
    if spec.kind == "sd-upscale":
        return _sd_upscale(name, spec, device, tile or 128, pad, prompt, negative_prompt, steps, noise_level,
                           guidance_scale, seed)
    raise ConfigError(f"model '{name}' has kind '{spec.kind}'; a super-resolution model needs kind "
                      f"{' or '.join(KINDS)} (models.{name}.kind)")


__all__ = ["KINDS", "ModelUpscaler", "lanczos", "load_upscaler", "tiled", "window_weight"]
