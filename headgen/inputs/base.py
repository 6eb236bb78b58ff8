"""The input-provider protocol (registry kind ``input``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from headgen.context import RunContext


@dataclass
class StepState:
    """What a provider may look at for one optimisation step (read only)."""

    stage: str
    """The stage's name (for error messages: ``stages.<stage>.inputs.<name>``)."""
    step: int
    representation: Any
    """The representation being optimised."""
    renderer: Any
    """The stage's renderer."""
    views: Any
    """The sampled :class:`headgen.camera_sampling.CameraBatch` (``cameras``, ``lights``, ``view_labels``)."""
    render: dict[str, Tensor]
    """The renderer's outputs for this step, images [B,H,W,C]."""
    device: torch.device


class InputProvider:
    """Base of registered guidance-input providers: ``__call__(state)`` returns the input's value.

    Registered under kind ``input``; the provider registered under an input's own name (e.g.
    ``landmark_map``) is the one a stage builds when its recipe does not name another.
    """

    def __init__(self, cfg: Any, ctx: RunContext, stage: str):
        self.cfg = cfg
        self.ctx = ctx
        self.stage = stage

    def __call__(self, state: StepState) -> Any:
        raise NotImplementedError(f"input provider {type(self).__name__} does not implement __call__")
