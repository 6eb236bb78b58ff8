"""Guidance plugins only: score distillation strategies on a shared diffusion backbone (the backbone,
prompts and the demo prior live in :mod:`headgen.prior`)."""

from guidance import controlnet_sds, dual_path_sds, iesd, sample_refine, sds, ssd, ssd_refine  # noqa: F401  (registers them)
from guidance.base import Guidance, GuidanceInput

__all__ = ["Guidance", "GuidanceInput"]
