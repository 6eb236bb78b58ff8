"""Refinement toward a (Control)Net sample: the former refine of the HeadArtist recipe (after HiFA; now `ssd-refine`).

Each step the render is encoded, noised to a t drawn from ``timesteps.t_range`` (SDEdit strength)
and denoised by DDIM with CFG ``cfg`` (negative prompt as the unconditional branch) through the
landmark ControlNet, in ``sample_steps`` steps over the whole schedule (fewer when t is lower:
only the scheduler's timesteps at or below t are run). The decoded sample is a fixed target
image for this step and ``loss_refine`` is an image distance from the render to it: per-pixel l2
(HiFA's image-space loss) or LPIPS-VGG (the perceptual loss of the paper), see
:mod:`guidance.perceptual`. A step costs about ``sample_steps * t + 1`` batched UNet (+ ControlNet)
calls (the DDIM timesteps at or below t), one VAE encode and one decode; no gradient flows through
the diffusion model or the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from guidance.base import GuidanceInput
from guidance.controlnet_sds import SwitchableControlNetConfig, SwitchableLandmarkGuidance
from guidance.perceptual import ImageLoss, ImageLossConfig
from guidance.sampling import ddim_scheduler, sdedit_sample
from guidance.timesteps import TimestepConfig, sample_timesteps
from headgen.config.schedule import Scalar, value_at
from headgen.prior.backbone import resize_images
from headgen.registry import register


def _refine_timesteps() -> TimestepConfig:
    return TimestepConfig(t_range=(0.2, 0.5))


@dataclass(kw_only=True)
class SampleRefineConfig(SwitchableControlNetConfig):
    back_view_controlnet: bool = True
    """Back views are sampled through the landmark ControlNet with the back-view (contour-only) map,
    as in HeadArtist; false: through the plain UNet."""
    cfg: Scalar = 7.5
    """CFG scale of the sample (diffusers convention)."""
    timesteps: TimestepConfig = field(default_factory=_refine_timesteps)
    """SDEdit strength: the sample starts from the render noised to t ~ U(t_range) (one t per batch);
    weighting is not used."""
    sample_steps: int = 20
    """DDIM steps over the whole schedule (a sample from t runs about sample_steps * t of them)."""
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    """Distance from the render to the sample: {kind: l2|l1|lpips, vgg: PATH, linear: PATH}."""

    def __post_init__(self) -> None:
        if self.sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {self.sample_steps}")
        # The sample is decoded to an image and compared with the render: there is no latent-space
        # variant, and no SDS gradient to clip or weight.
        if self.space != "rgb":
            raise ValueError("sample-refine works on images: space must be rgb (the render is VAE-encoded)")
        if self.grad_clip is not None:
            raise ValueError("sample-refine has no SDS gradient to clip: leave grad_clip null "
                             "(clip the optimiser's gradient norm with optimizer.grad_clip)")


@register("guidance", "sample-refine")
class SampleRefineGuidance(SwitchableLandmarkGuidance):
    """Image-space loss from the render to a CFG sample of it (SDEdit + DDIM through the ControlNet)."""

    Config = SampleRefineConfig

    def __init__(self, cfg: SampleRefineConfig, ctx, backbone=None):
        super().__init__(cfg, ctx, backbone=backbone)
        self.image_loss = ImageLoss(cfg.loss)
        self.scheduler = ddim_scheduler(self.backbone)

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        self.check_inputs(inp)
        image = resize_images(inp.render[self.cfg.image_key][..., :3], self.cfg.resolution)
        with torch.no_grad():
            z0 = self.backbone.encode(image.detach())
        t = sample_timesteps(self.cfg.timesteps, inp.step, self.total_steps, 1, self.backbone.num_train_timesteps,
                             generator)
        t_start = int(t[0])
        branches = self.cfg_branches(inp, z0)
        z = sdedit_sample(self.backbone, z0, t_start, branches, value_at(self.cfg.cfg, inp.step),
                          self.cfg.sample_steps, generator, self.views(inp), self.scheduler)
        with torch.no_grad():
            sample = self.backbone.decode(z).to(image)
        loss = self.image_loss(image, sample.detach())
        return {
            "loss_refine": loss,
            "t": torch.tensor(t_start / self.backbone.num_train_timesteps),
            "sample_distance": loss.detach(),
        }
