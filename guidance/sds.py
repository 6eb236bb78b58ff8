"""Score distillation sampling (DreamFusion) on RGB renders through the VAE, or on latents."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.base import GuidanceInput
from guidance.distill import DistillConfig, DistillGuidance
from headgen.registry import register


@register("guidance", "sds")
class SDSGuidance(DistillGuidance):
    """SDS: grad = w(t) (eps_u + w (eps_c - eps_u) - eps), on VAE latents of the render or on latents."""

    Config = DistillConfig

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        z, grad, t = self.sds_grad(inp, generator)
        return self.finish("sds", z, grad, t, inp.step)
