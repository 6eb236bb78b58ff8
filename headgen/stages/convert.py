"""The ``convert`` stage: turn the current representation into another (e.g. NeRF -> DMTet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from headgen.config.typed import Component, component
from headgen.context import RunContext
from headgen.errors import ConfigError
from headgen.protocols import Converter
from headgen.registry import register
from headgen.stages.base import Stage
from headgen.stages.results import save_result


@dataclass(kw_only=True)
class ConvertConfig:
    converter: Component = component("converter")
    """The conversion to apply ({type: nerf-to-dmtet, ...})."""


@register("stage", "convert")
class ConvertStage(Stage):
    """Convert the previous stage's representation into a new one; no optimisation."""

    Config = ConvertConfig

    def run(self, ctx: RunContext, resume_checkpoint: Path | None = None) -> None:
        previous = ctx.state.get("representation")
        if previous is None:
            raise ConfigError(f"stages.{self.name}: a convert stage needs an earlier stage's representation")
        torch.manual_seed(ctx.stage_seed(self.name))
        converter: Converter = self.cfg.converter.build(ctx)
        rep = converter.convert(previous.to(ctx.device), ctx).to(ctx.device)
        ctx.state["representation"] = rep
        save_result(ctx.run_dir.stage_dir(self.name), rep, ctx.stamp(self.name))
