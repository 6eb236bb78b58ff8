"""``source_render``: the frozen pre-edit head (a ``load`` stage's) rendered at the step's cameras."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headgen.errors import ConfigError
from headgen.inputs.base import InputProvider, StepState
from headgen.registry import register


@dataclass
class SourceRenderConfig:
    key: str = "rgb"
    """Which renderer output of the source head to hand over."""


@register("input", "source_render")
class SourceRenderProvider(InputProvider):
    """[B,H,W,3] render of the frozen source head at the batch's cameras and lights (editing, IESD)."""

    Config = SourceRenderConfig

    @torch.no_grad()
    def __call__(self, state: StepState) -> Tensor:
        source = self.ctx.state.get("source_representation")
        if source is None:
            raise ConfigError(
                f"stages.{state.stage}.inputs.source_render: no source head to render: start the recipe "
                "with a load stage (source=RUN_DIR)"
            )
        views = state.views
        out = state.renderer.render(source.render_input(), views.cameras, views.lights, modes=(self.cfg.key,))
        return out[self.cfg.key]
