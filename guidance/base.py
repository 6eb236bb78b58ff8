"""The guidance protocol: render in, ``loss_*`` terms out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class GuidanceInput:
    """Everything a guidance may look at for one optimisation step."""

    render: dict[str, Tensor]
    """Renderer outputs, images [B,H,W,C] in [0,1] (``rgb``, ``normal``, ``latent``, ...)."""
    cameras: Any
    """The :class:`headgen.cameras.Cameras` of the batch."""
    view_labels: list[str]
    """front / side / back / overhead per view (view-dependent prompts)."""
    prompt: str
    step: int
    negative_prompt: str = ""
    lights: Any = None
    """The :class:`headgen.cameras.Lights` the batch was rendered under (None: unknown / unlit)."""
    landmark_map: Tensor | None = None
    """[B,H,W,3] landmark conditioning for ControlNet guidance."""
    source_render: Tensor | None = None
    """[B,H,W,3] render of the frozen pre-edit model (editing)."""
    extra: dict[str, Any] = field(default_factory=dict)


class Guidance:
    """Base class of registered guidance (kind ``guidance``).

    ``__call__`` returns a dict with ``loss_<name>`` tensors (weighted by ``lambda_<name>`` in
    the stage's ``losses``) and logged scalars such as ``grad_norm`` and ``t``.
    """

    required_modes: tuple[str, ...] = ("rgb",)
    """Renderer outputs this guidance reads."""

    def __init__(self, cfg: Any, ctx: Any):
        self.cfg = cfg

    def to(self, device: torch.device) -> Guidance:
        return self

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError(f"guidance {type(self).__name__} does not implement __call__")
