"""Guidance plugins: score distillation strategies on a shared diffusion backbone."""

from guidance.base import Guidance, GuidanceInput

__all__ = ["Guidance", "GuidanceInput"]
