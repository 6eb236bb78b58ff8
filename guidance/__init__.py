"""Guidance plugins: score distillation strategies on a shared diffusion backbone."""

from guidance import clip_select, controlnet_sds, dual_path_sds, iesd, sample_refine, sds, ssd  # noqa: F401  (registers them)
from guidance.base import Guidance, GuidanceInput
from guidance.demo import selection  # noqa: F401

__all__ = ["Guidance", "GuidanceInput"]
