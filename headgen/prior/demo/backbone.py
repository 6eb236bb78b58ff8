"""The demo prior as a diffusion backbone: the exact denoiser of renders of known targets.

It has the pretrained backbone's interface, so every guidance runs on it unchanged: SD's
scaled-linear alphas, a linear autoencoder with SD's shapes, and ``eps`` that answers every
branch from the closed-form posterior over its data set (see :mod:`headgen.prior.demo.world`).
Analogues: a branch's text maps to its target (``subject``; ``edit`` gives the edited target, the
InstructPix2Pix analogue); the unconditional / negative branch is the mixture over the bank.

Which cameras the data are rendered at is ``demo.views``. exact: the batch's own, for every
branch (a text branch then already knows the camera; a ControlNet analogue has nothing to add and
leaves the data unchanged, its passes still counted). ambiguous: a text branch's data cover every
azimuth its text allows (:mod:`headgen.prior.demo.views`), the unconditional / negative branch's
every azimuth. The landmark-ControlNet analogue reads its control image: the camera is inferred
from the landmark map (:mod:`headgen.prior.demo.camera_reader`) and the data are rendered there,
so a missing, mirrored or wrong map gives the wrong data; an empty map says nothing and the data
are the text's. The InstructPix2Pix analogue reads the camera off its source render likewise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from headgen.cameras import Cameras
from headgen.errors import HeadgenError
from headgen.prior.backbone import Branch, DiffusionBackbone, ViewInfo
from headgen.prior.demo.autoencoder import LinearAutoencoder
from headgen.prior.demo.denoiser import eps_prediction
from headgen.prior.demo.views import look_target
from headgen.prior.demo.world import CAMERA_FREE_KEYS, DemoWorld

LANDMARKS, IP2P = "landmarks", "ip2p"
"""The ControlNets' role names (guidance.controlnet_sds.LANDMARKS, guidance.iesd.IP2P)."""


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
        if views is None or (views.cameras is None and views.image_key not in CAMERA_FREE_KEYS):
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
        x = z_t.detach().float().reshape(b, -1)
        # UV-space data have no camera to be ambiguous about (with cells, a texture branch would hold
        # 24 identical copies of each target's map: the same posterior at 24x the cost).
        ambiguous = (self.world.settings.views == "ambiguous" and views.cameras is not None
                     and views.image_key not in CAMERA_FREE_KEYS)
        for br in branches:
            targets = self.world.targets_for(br.subject, br.edit)
            if ambiguous:
                modes, inferred = self._sample_modes(br, views, cache)
                per_sample = self.world.branch_data(targets, views, h, branch_views(br), modes, inferred, cache,
                                                    exact=br.subject is not None)
                eps = torch.cat([eps_prediction(x[i : i + 1], d[None].to(x), a[i : i + 1])
                                 for i, d in enumerate(per_sample)])
                out.append(eps.view(b, c, h, w).to(z_t.dtype))
                continue
            data = self.world.data(targets, views, h, w, cache)
            if data.shape[0] != b:
                data = data.expand(b, *data.shape[1:])
            out.append(eps_prediction(x, data.to(x), a).view(b, c, h, w).to(z_t.dtype))
        return out


    def _sample_modes(self, br: Branch, views: ViewInfo, cache: dict) -> tuple[list[str], Cameras | None]:
        """Per sample, where its data come from: ``inferred`` (the camera read from an active,
        non-blank control image: the landmark map first, else the InstructPix2Pix source render),
        ``exact`` (another active control, taken as stating the camera exactly) or ``text`` (no
        control); and the inferred cameras (None when no sample has one)."""
        cams = views.cameras
        b = cams.batch_size
        modes = ["text"] * b
        az, el = cams.azimuth.cpu().clone(), cams.elevation.cpu().clone()
        readers = {LANDMARKS: self.world.camera_reader, IP2P: self.world.render_reader}
        for control in sorted(br.controls, key=lambda c: c.name != LANDMARKS):  # landmark maps first
            active = [True] * b if control.active is None else [bool(v) for v in control.active.tolist()]
            if control.name not in readers:
                modes = ["exact" if a and m == "text" else m for m, a in zip(modes, active)]
                continue
            key = ("camera-read", control.name, id(control.image))
            if key not in cache:
                cache[key] = readers[control.name]().read(control.image, cams)
            read_az, read_el, readable = cache[key]
            for i in range(b):
                if active[i] and bool(readable[i]) and modes[i] != "inferred":
                    modes[i] = "inferred"
                    az[i], el[i] = read_az[i], read_el[i]
        if "inferred" not in modes:
            return modes, None
        inferred = Cameras.from_spherical(el, az, cams.distance.cpu(), torch.rad2deg(cams.fovy.cpu()),
                                          cams.height, cams.width, target=look_target(cams).cpu())
        return modes, inferred


def branch_views(br: Branch) -> list[str | None] | None:
    """The view each sample's text names; the unconditional / negative branch names none."""
    return br.views if br.subject is not None else None
