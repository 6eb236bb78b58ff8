"""The ``select`` stage: pick something (identity, hairstyle, ...) without gradients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from headgen.config.typed import Component, component
from headgen.context import RunContext
from headgen.protocols import Selector
from headgen.registry import register
from headgen.stages.base import Stage
from headgen.stages.results import save_result


@dataclass(kw_only=True)
class SelectConfig:
    selector: Component = component("selector")
    """What to select and how ({type: clip-select, ...})."""
    representation: Component | None = component("representation", default=None)
    """The representation the selection acts on; omitted: the previous stage's."""


@register("stage", "select")
class SelectStage(Stage):
    """Run a selector (e.g. CLIP selection of identity coefficients); no optimisation."""

    Config = SelectConfig

    def run(self, ctx: RunContext, resume_checkpoint: Path | None = None) -> None:
        torch.manual_seed(ctx.stage_seed(self.name))
        rep = self.build_representation(ctx, self.cfg.representation)
        selector: Selector = self.cfg.selector.build(ctx)
        with torch.no_grad():
            selector.select(rep, ctx, ctx.generator(self.name))
        ctx.state["representation"] = rep
        save_result(ctx.run_dir.stage_dir(self.name), rep, ctx.stamp(self.name))
