"""The demo prior as a diffusion backbone: the exact denoiser of renders of known targets.

It has the pretrained backbone's interface, so every guidance runs on it unchanged: SD's
scaled-linear alphas, a linear autoencoder with SD's shapes, and ``eps`` that answers every
branch from the closed-form posterior over its data set (see :mod:`headgen.prior.demo.world`).
Analogues: a branch's text maps to its target (``subject``; ``edit`` gives the edited target, the
InstructPix2Pix analogue); the unconditional / negative branch is the mixture over the bank. A
landmark-ControlNet analogue conditions on the camera of the landmark map, which is the camera
the data are already rendered at, so it leaves the data unchanged (its passes are still counted).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from headgen.errors import HeadgenError
from headgen.prior.backbone import Branch, DiffusionBackbone, ViewInfo
from headgen.prior.demo.autoencoder import LinearAutoencoder
from headgen.prior.demo.denoiser import eps_prediction
from headgen.prior.demo.world import DemoWorld


def sd_alphas_cumprod(num_train_timesteps: int = 1000) -> Tensor:
    """Stable Diffusion's scaled-linear schedule (beta 0.00085 .. 0.012)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          num_train_timesteps=num_train_timesteps)
    return sched.alphas_cumprod.float()


class DemoBackbone(DiffusionBackbone):
    """Closed-form denoiser over renders of demo targets (labelled a demo prior everywhere)."""

    is_demo = True

    def __init__(self, world: DemoWorld, controlnets: list[str] | None = None):
        super().__init__()
        self.world = world
        self.device = world.device
        self.controlnets = list(controlnets or [])
        self.num_train_timesteps = 1000
        self.alphas_cumprod = sd_alphas_cumprod().to(self.device)
        self.ae: LinearAutoencoder = world.ae
        self.latent_channels = 4
        self.downscale = 8

    @classmethod
    def for_run(cls, ctx: Any, controlnets: list[str] | None = None) -> DemoBackbone:
        return cls(DemoWorld.for_run(ctx), controlnets)

    def encode(self, images: Tensor) -> Tensor:
        self.calls["vae_encode"] += 1
        return self.ae.encode(images)

    def decode(self, latents: Tensor) -> Tensor:
        self.calls["vae_decode"] += 1
        return self.ae.decode(latents)

    def eps(self, z_t: Tensor, t: Tensor, branches: list[Branch], views: ViewInfo | None = None,
            extra_channels: Tensor | None = None) -> list[Tensor]:
        # extra_channels (the texture LDM's mask) is not read: the demo texture prior models the whole
        # UV map, which is what DreamFace's all-ones mask asks for.
        if views is None or (views.cameras is None and views.image_key != "uv_albedo"):
            raise HeadgenError("the demo prior needs the batch's cameras (ViewInfo) to know what the data look like")
        self.calls["unet"] += 1
        for name in sorted({c.name for br in branches for c in br.controls}):
            if name not in self.controlnets:
                raise KeyError(f"no ControlNet named {name!r}; loaded: {', '.join(self.controlnets) or 'none'}")
            self.calls[f"controlnet:{name}"] += 1
        b, c, h, w = z_t.shape
        a = self.alphas_cumprod[t.to(self.device)]
        cache: dict = views.cache.setdefault(("demo-data", h, w), {})
        out = []
        for br in branches:
            data = self.world.data(self.world.targets_for(br.subject, br.edit), views, h, w, cache)
            if data.shape[0] != b:
                data = data.expand(b, *data.shape[1:])
            x = z_t.detach().float().reshape(b, -1)
            out.append(eps_prediction(x, data.to(x), a).view(b, c, h, w).to(z_t.dtype))
        return out
