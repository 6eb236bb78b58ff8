"""The guidance protocol: render in, ``loss_*`` terms out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from headgen.errors import HeadgenError


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

    def edit_text(self, configured: str | None, who: str) -> str | None:
        """The edit instruction of an editing guidance: its own ``edit_prompt`` option when set,
        else the run's edit prompt (``extra['edit_prompt']``); None (or "") when there is none."""
        text = configured if configured is not None else self.extra.get("edit_prompt")
        if text is None:
            return None
        if not isinstance(text, str):
            raise HeadgenError(f"{who}: the edit prompt must be text, got {type(text).__name__}")
        return text.strip() or None


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
