"""Selectors that use the demo prior's knowledge (for tests and ablations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from headgen.errors import ConfigError
from headgen.prior.demo.world import DemoWorld
from headgen.registry import register

if TYPE_CHECKING:
    from headgen.context import RunContext


@register("selector", "demo-target-identity")
class DemoTargetIdentity:
    """Set the identity coefficients to the demo target's (fixed-geometry texture experiments)."""

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config, ctx: RunContext | None = None):
        self.cfg = cfg

    def select(self, representation: Any, ctx: RunContext, generator: torch.Generator) -> None:
        if not hasattr(representation, "set_identity"):
            raise ConfigError("selector demo-target-identity needs a representation with identity coefficients")
        representation.set_identity(DemoWorld.for_run(ctx).target.beta)
