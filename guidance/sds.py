"""Score distillation sampling (DreamFusion) on RGB renders through the VAE, or on latents."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.backbone import Branch
from guidance.base import GuidanceInput
from guidance.distill import DistillConfig, DistillGuidance, cfg_combine
from guidance.prompts import view_texts
from headgen.config.schedule import value_at
from headgen.registry import register


@register("guidance", "sds")
class SDSGuidance(DistillGuidance):
    """SDS: grad = w(t) (eps_u + w (eps_c - eps_u) - eps), on VAE latents of the render or on latents."""

    Config = DistillConfig

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        z = self.latents(inp)
        t, noise, z_t = self.noise_and_t(z, inp.step, generator)
        b = z.shape[0]
        texts = view_texts(self.cfg.prompt, inp.prompt, inp.view_labels or ["front"] * b)
        with torch.no_grad():
            branches = [Branch(texts, subject=inp.prompt), Branch([self.negative(inp)] * b)]
            eps_c, eps_u = self.backbone.eps(z_t, t, branches, self.views(inp))
        eps = cfg_combine(eps_c, eps_u, value_at(self.cfg.cfg, inp.step))
        grad = self.weight(t, z) * (eps - noise)
        return self.finish("sds", z, grad, t, inp.step)
