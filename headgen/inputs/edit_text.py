"""``edit_text``: the run's edit instruction (the recipe's top-level ``edit_prompt``)."""

from __future__ import annotations

from dataclasses import dataclass

from headgen.inputs.base import InputProvider, StepState
from headgen.registry import register


@dataclass
class EditTextConfig:
    text: str | None = None
    """The edit instruction (null: the run's edit_prompt; "" means no edit)."""


@register("input", "edit_text")
class EditTextProvider(InputProvider):
    """The run's edit instruction (None when the run has none)."""

    Config = EditTextConfig

    def __call__(self, state: StepState) -> str | None:
        return self.cfg.text if self.cfg.text is not None else self.ctx.config.edit_prompt
