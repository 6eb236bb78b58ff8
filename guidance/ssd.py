"""Self score distillation (HeadArtist).

The same frozen (Control)Net is evaluated twice on the same noisy latent and landmark map:
``eps_w = eps_u' + w (eps_c - eps_u')`` with u' the negative prompt, and ``eps_1 = eps_c`` of the
reference prompt (CFG 1). The gradient is ``w(t) (eps_w - eps_1)``: the sampled noise does not
appear. With the default view-independent reference and a view-independent prompt (or a
view-dependent reference), ``eps_1`` is the conditional pass already computed, so a step costs
what SDS with CFG costs: one UNet call on 2 branches and one ControlNet call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from guidance.backbone import Branch
from guidance.base import GuidanceInput
from guidance.controlnet_sds import ControlNetSDSConfig, LandmarkGuidance
from guidance.distill import cfg_combine
from headgen.config.schedule import value_at
from headgen.registry import register


@dataclass(kw_only=True)
class SSDConfig(ControlNetSDSConfig):
    use_controlnet: bool = True
    """Condition on the landmark map through the landmark ControlNet (back views use the plain UNet)."""
    view_dependent_reference: bool = False
    """The reference eps_1 uses the view-dependent prompt (true) or the plain prompt (false, HeadArtist)."""
    ablation: Literal["ssd", "sds"] = "ssd"
    """ssd: self score distillation; sds: SDS with CFG on the same model and controls (the paper's
    ablation). The loss key stays loss_ssd, so a recipe switches with this option alone."""

    def unused_models(self) -> set[str]:
        return set() if self.use_controlnet else {"controlnet"}


@register("guidance", "ssd")
class SSDGuidance(LandmarkGuidance):
    """SSD (HeadArtist): grad = w(t) (eps_u' + w (eps_c - eps_u') - eps_c(reference)), no noise term."""

    Config = SSDConfig

    def uses_landmarks(self) -> bool:
        return self.cfg.use_controlnet

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        self.check_landmarks(inp)
        z = self.latents(inp)
        t, noise, z_t = self.noise_and_t(z, inp.step, generator)
        b = z.shape[0]
        branches = self.cfg_branches(inp, z)
        cond = branches[0]
        reference = cond.texts if self.cfg.view_dependent_reference else [inp.prompt] * b
        extra_pass = self.cfg.ablation == "ssd" and reference != cond.texts
        if extra_pass:
            branches.append(Branch(reference, list(cond.controls), subject=inp.prompt))
        with torch.no_grad():
            eps = self.backbone.eps(z_t, t, branches, self.views(inp))
        eps_c, eps_u = eps[0], eps[1]
        w = value_at(self.cfg.cfg, inp.step)
        if self.cfg.ablation == "sds":
            grad = self.weight(t, z) * (cfg_combine(eps_c, eps_u, w) - noise)
        else:
            eps_1 = eps[2] if extra_pass else eps_c
            # eps_w - eps_1 written so that w = 1 with eps_1 = eps_c gives exactly zero.
            grad = self.weight(t, z) * ((eps_c - eps_1) + (w - 1.0) * (eps_c - eps_u))
        return self.finish("ssd", z, grad, t, inp.step)
