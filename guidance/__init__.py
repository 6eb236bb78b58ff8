"""Guidance plugins: score distillation strategies on a shared diffusion backbone."""

from guidance import sds  # noqa: F401  (registers the guidance plugins)
from guidance.base import Guidance, GuidanceInput

__all__ = ["Guidance", "GuidanceInput"]
