"""HeadArtist's refine stage: SSD plus an image-space loss to a (Control)Net sample.

The authors' refine config keeps the texture stage's SSD (``lambda_ssd`` 1) and adds a perceptual
loss (``lambda_perceptual`` 100, LPIPS-VGG) between the render and an image sampled from noise by
25 DPM-Solver steps through the landmark ControlNet at CFG 7.5 with a fixed seed (the paper: "SSD
in image space following HiFA"). Each step here:

* ``loss_ssd``: the SSD gradient of :class:`guidance.ssd.SSDGuidance` on the encoded render (the
  same options: view-dependent CFG-w branch, plain CFG-1 reference, back views with the contour map);
* ``loss_refine``: an image distance (:mod:`guidance.perceptual`: l2, l1 or LPIPS-VGG) from the
  render to a target decoded from a CFG sample with SSD's own [conditional, negative] branches
  (same texts, same landmark controls). ``target.source``: ``noise`` samples from pure noise
  (the authors'), ``sdedit`` from the render noised to t ~ U(``target.t_range``) by DDIM (HiFA-style
  SDEdit, the former default of headgen's refine).

The target is fixed for the step (no gradient through the diffusion model or the VAE). Cost per
step: SSD's one batched UNet + ControlNet call, ``target.sample_steps`` more (``noise``; ``sdedit`` runs
only the DDIM steps at or below t), one VAE encode and one decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from guidance.base import GuidanceInput
from guidance.perceptual import ImageLoss, ImageLossConfig
from guidance.sampling import ddim_scheduler, dpm_solver_scheduler, noise_sample, sdedit_sample
from guidance.ssd import SSDConfig, SSDGuidance
from headgen.config.schedule import Scalar, value_at
from headgen.prior.backbone import resize_images
from headgen.registry import register


@dataclass
class RefineTargetConfig:
    source: Literal["noise", "sdedit"] = "noise"
    """noise: a sample from pure noise (the authors' refine); sdedit: from the render noised to
    t ~ U(t_range), denoised by DDIM (HiFA-style SDEdit)."""
    sampler: Literal["dpm-solver", "ddim"] = "dpm-solver"
    """noise: DPM-Solver++ (the authors', diffusers' multistep solver) or deterministic DDIM;
    sdedit always uses DDIM (it starts part-way down the schedule)."""
    sample_steps: int = 25
    """Sampler steps over the whole schedule (sdedit runs those at or below t)."""
    cfg: Scalar = 7.5
    """CFG scale of the sample (diffusers convention; the negative prompt is the unconditional branch)."""
    t_range: tuple[float, float] = (0.2, 0.5)
    """sdedit: the strength, t ~ U[min, max] per step (fractions of the training timesteps)."""
    seed: int | None = 0
    """Seed of the sample's starting noise, the same every step (the authors sample with a fixed seed:
    a view's target then changes only with its camera, landmarks and text); null: fresh noise from the
    stage's generator each step."""

    def __post_init__(self) -> None:
        if self.sample_steps < 1:
            raise ValueError(f"target.sample_steps must be >= 1, got {self.sample_steps}")
        lo, hi = self.t_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"target.t_range must be 0 <= min <= max <= 1, got {list(self.t_range)}")


@dataclass(kw_only=True)
class SSDRefineConfig(SSDConfig):
    target: RefineTargetConfig = field(default_factory=RefineTargetConfig)
    """The image-space target: where its sample starts, the sampler, steps, CFG and seed."""
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    """Distance from the render to the target: {kind: l2|l1|lpips, vgg: PATH, linear: PATH}."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # The target is decoded to an image and compared with the render: no latent-space variant.
        if self.space != "rgb":
            raise ValueError("ssd-refine works on images: space must be rgb (the render is VAE-encoded)")


@register("guidance", "ssd-refine")
class SSDRefineGuidance(SSDGuidance):
    """SSD on the render plus an image-space loss to a CFG sample through the landmark ControlNet."""

    Config = SSDRefineConfig

    def __init__(self, cfg: SSDRefineConfig, ctx, backbone=None):
        super().__init__(cfg, ctx, backbone=backbone)
        self.image_loss = ImageLoss(cfg.loss)
        use_dpm = cfg.target.source == "noise" and cfg.target.sampler == "dpm-solver"
        self.scheduler = dpm_solver_scheduler(self.backbone) if use_dpm else ddim_scheduler(self.backbone)

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        z, t, noise, z_t = self.start(inp, generator)
        views = self.views(inp)  # one ViewInfo: a prior that renders its data makes them once
        grad, branches = self.ssd_grad(inp, z, t, noise, z_t, views)
        out = self.finish("ssd", z, grad, t, inp.step)

        target = self.cfg.target
        draw = generator if target.seed is None else torch.Generator().manual_seed(target.seed)
        cfg = value_at(target.cfg, inp.step)
        if target.source == "noise":
            start = torch.randn(z.shape, generator=draw).to(z)
            sample = noise_sample(self.backbone, start, branches, cfg, target.sample_steps, self.scheduler, views)
            t_sample = 1.0
        else:
            lo, hi = (round(x * self.backbone.num_train_timesteps) for x in target.t_range)
            t_start = int(torch.randint(lo, max(lo, hi) + 1, (1,), generator=draw))
            sample = sdedit_sample(self.backbone, z.detach(), t_start, branches, cfg, target.sample_steps, draw, views,
                                   self.scheduler)
            t_sample = t_start / self.backbone.num_train_timesteps
        image = resize_images(inp.render[self.cfg.image_key][..., :3], self.cfg.resolution)
        with torch.no_grad():
            decoded = self.backbone.decode(sample).to(image)
        loss = self.image_loss(image, decoded.detach())
        out.update(loss_refine=loss, sample_distance=loss.detach(), t_sample=torch.tensor(t_sample))
        return out
