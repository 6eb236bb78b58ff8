"""Simple selectors (kind ``selector``) that need no model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from headgen.errors import ConfigError
from headgen.registry import register

if TYPE_CHECKING:
    from headgen.context import RunContext


@register("selector", "head-identity")
class HeadIdentitySelector:
    """Set the identity coefficients from the seed (random ~ N(0, scale^2)) or to the mean head."""

    @dataclass
    class Config:
        mode: Literal["random", "mean"] = "random"
        """random: beta ~ N(0, scale^2) from the run's seed; mean: beta = 0 (the template head)."""
        scale: float = 1.0
        """Standard deviation of the random coefficients."""

    def __init__(self, cfg: Config, ctx: RunContext | None = None):
        self.cfg = cfg

    def select(self, representation: Any, ctx: RunContext, generator: torch.Generator) -> None:
        if not hasattr(representation, "set_identity"):
            raise ConfigError(
                "selector head-identity needs a representation with identity coefficients (parametric-mesh)"
            )
        n = representation.beta.numel()
        beta = torch.zeros(n) if self.cfg.mode == "mean" else self.cfg.scale * torch.randn(n, generator=generator)
        representation.set_identity(beta)
        ctx.metrics["selected_beta_norm"] = float(beta.norm())
