"""The diffusion backbone: the one place that runs a diffusion model for guidance.

It owns the UNet, the ControlNets, the VAE, the text encoder and the scheduler's alphas, and it
evaluates any number of conditioning *branches* (text, optional controls) on one noisy latent
with ONE batched UNet call (and one call per ControlNet, on just the samples that use it). SDS,
dual-path SDS, IESD and SSD are small strategies on top of :meth:`DiffusionBackbone.eps`.

Conventions: images are [B,H,W,3] in [0,1]; latents are [B,4,h,w] already multiplied by the
VAE's scaling factor; timesteps are integer [B] tensors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Control:
    """One ControlNet's conditioning for a branch."""

    name: str
    """Which ControlNet (a key of the backbone's ``controlnets``)."""
    image: Tensor
    """[B,H,W,3] control image in [0,1]."""
    scale: float = 1.0
    """conditioning_scale."""
    active: Tensor | None = None
    """[B] bool: samples that use this control (others get no residual, e.g. back views); None = all."""


@dataclass
class Branch:
    """One conditioning of the noisy latent: per-sample texts plus optional controls.

    ``subject``, ``edit`` and ``views`` say what the texts describe, for priors that do not read
    text (the demo prior): ``subject`` is the user's prompt behind view-dependent texts (None for
    the unconditional / negative branch), ``edit`` an edit instruction applied to it.
    """

    texts: list[str]
    controls: list[Control] = field(default_factory=list)
    subject: str | None = None
    edit: str | None = None
    views: list[str | None] | None = None
    """Per sample, the view its text names (front / side / back / overhead), None: the text names
    no view; for priors that do not read text (the demo prior's text data cover that sector)."""


@dataclass
class ViewInfo:
    """The batch's cameras and what the latents encode; pretrained models ignore it."""

    cameras: Any
    lights: Any = None
    """The lights the batch was rendered under, when known."""
    image_key: str = "rgb"
    """The renderer output behind the latents (rgb, normal, latent, ...)."""
    space: str = "rgb"
    """rgb: latents are VAE encodings of images; latent: the latents were rendered directly."""
    cache: dict = field(default_factory=dict, repr=False, compare=False)
    """Memo of a prior that renders its own data (the demo prior), valid for this batch only: a
    guidance that calls ``eps`` several times on one ViewInfo (a DDIM sample) renders them once."""


class DiffusionBackbone:
    """Interface shared by the pretrained backbone and the demo prior."""

    num_train_timesteps: int
    alphas_cumprod: Tensor
    latent_channels: int = 4
    downscale: int = 8
    is_demo: bool = False

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        """Model forward calls by kind ('unet', 'controlnet:<name>', 'vae_encode', ...), for tests and benchmarks."""

    def encode(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    def eps(self, z_t: Tensor, t: Tensor, branches: list[Branch], views: ViewInfo | None = None,
            extra_channels: Tensor | None = None) -> list[Tensor]:
        """Noise predictions for every branch (each [B,4,h,w]); ``views`` describes the batch
        (ignored by pretrained models, used by the demo prior). ``extra_channels`` [B,C,h,w] are
        appended to the noisy latent for a UNet that takes them (DreamFace's texture LDM: a mask)."""
        raise NotImplementedError

    def add_noise(self, z0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        a = self.alphas_cumprod[t].to(z0.dtype).view(-1, *([1] * (z0.dim() - 1)))
        return a.sqrt() * z0 + (1.0 - a).sqrt() * noise


class PretrainedBackbone(DiffusionBackbone):
    """Stable Diffusion (+ ControlNets) from diffusers."""

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_embedder: Any,
        scheduler: Any,
        controlnets: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.text = text_embedder
        self.controlnets = controlnets or {}
        self.device = torch.device(device)
        self.dtype = next(unet.parameters()).dtype
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.scaling = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)

    def encode(self, images: Tensor) -> Tensor:
        self.calls["vae_encode"] += 1
        x = images.permute(0, 3, 1, 2).to(self.dtype) * 2.0 - 1.0
        z = self.vae.encode(x).latent_dist.mean
        return (z * self.scaling).float()

    def decode(self, latents: Tensor) -> Tensor:
        self.calls["vae_decode"] += 1
        x = self.vae.decode((latents / self.scaling).to(self.dtype)).sample
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    def eps(self, z_t: Tensor, t: Tensor, branches: list[Branch], views: ViewInfo | None = None,
            extra_channels: Tensor | None = None) -> list[Tensor]:
        b = z_t.shape[0]
        n = len(branches)
        texts = [text for br in branches for text in br.texts]
        if len(texts) != n * b:
            raise ValueError(f"every branch needs one text per sample ({b}), got {[len(br.texts) for br in branches]}")
        if extra_channels is not None:
            if any(br.controls for br in branches):
                raise ValueError("a UNet with extra input channels runs no ControlNet here")
            z_t = torch.cat([z_t, extra_channels.to(z_t)], dim=1)
        emb = self.text(texts).to(self.device, self.dtype)
        z_in = z_t.repeat(n, 1, 1, 1).to(self.device, self.dtype)
        t_in = t.to(self.device).repeat(n)
        down, mid = self._control_residuals(z_in, t_in, emb, branches, b)
        self.calls["unet"] += 1
        out = self.unet(
            z_in, t_in, encoder_hidden_states=emb,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample.float()
        return list(out.chunk(n))

    def _control_residuals(
        self, z_in: Tensor, t_in: Tensor, emb: Tensor, branches: list[Branch], b: int
    ) -> tuple[list[Tensor] | None, Tensor | None]:
        """Sum of every ControlNet's residuals (MultiControlNet), each ControlNet run once on the
        samples that use it and zero elsewhere."""
        per_net: dict[str, list[tuple[int, Control]]] = {}
        for i, br in enumerate(branches):
            for c in br.controls:
                if c.name not in self.controlnets:
                    raise KeyError(f"no ControlNet named {c.name!r}; loaded: {', '.join(self.controlnets) or 'none'}")
                per_net.setdefault(c.name, []).append((i, c))
        down_sum: list[Tensor] | None = None
        mid_sum: Tensor | None = None
        for name, items in per_net.items():
            rows, images, scales = [], [], []
            for i, c in items:
                active = torch.ones(b, dtype=torch.bool) if c.active is None else c.active.cpu()
                idx = torch.nonzero(active).flatten()
                rows.append(i * b + idx)
                images.append(c.image[idx.to(c.image.device)])
                scales.append(torch.full((len(idx),), float(c.scale)))
            rows_t = torch.cat(rows).to(self.device)
            if rows_t.numel() == 0:
                continue
            cond = torch.cat(images).permute(0, 3, 1, 2).to(self.device, self.dtype)
            scale = torch.cat(scales).to(self.device, self.dtype)
            self.calls[f"controlnet:{name}"] += 1
            down, mid = self.controlnets[name](
                z_in[rows_t], t_in[rows_t], encoder_hidden_states=emb[rows_t], controlnet_cond=cond,
                return_dict=False,
            )
            s = scale.view(-1, 1, 1, 1)
            full_down = [torch.zeros((z_in.shape[0], *d.shape[1:]), device=d.device, dtype=d.dtype) for d in down]
            for fd, d in zip(full_down, down):
                fd[rows_t] = d * s
            full_mid = torch.zeros((z_in.shape[0], *mid.shape[1:]), device=mid.device, dtype=mid.dtype)
            full_mid[rows_t] = mid * s
            down_sum = full_down if down_sum is None else [a + c for a, c in zip(down_sum, full_down)]
            mid_sum = full_mid if mid_sum is None else mid_sum + full_mid
        return down_sum, mid_sum


def resize_images(images: Tensor, size: int) -> Tensor:
    """[B,H,W,C] -> [B,size,size,C] (bilinear, antialiased when shrinking)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = images.permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    return x.permute(0, 2, 3, 1)
