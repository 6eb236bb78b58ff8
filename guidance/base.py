"""The guidance protocol: render (and declared inputs) in, ``loss_*`` terms out; lifecycle hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from headgen.config.schedule import Scalar
from headgen.errors import HeadgenError

if TYPE_CHECKING:
    from headgen.context import RunContext


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
    inputs: dict[str, Any] = field(default_factory=dict)
    """The inputs the guidance declared (:attr:`Guidance.inputs`), made by the stage's providers
    (:mod:`headgen.inputs`): ``landmark_map`` [B,H,W,3], ``source_render`` [B,H,W,3], ``edit_text``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What the representation hands the guidance (``Representation.guidance_extras``), e.g. a UV latent."""

    def require(self, name: str, who: str) -> Any:
        """The declared input ``name``; a clear error when the stage did not provide it."""
        value = self.inputs.get(name)
        if value is None:
            raise HeadgenError(
                f"{who} needs the input '{name}', but the stage provided none: declare it in the guidance's "
                f"inputs (the optimize stage then builds its provider, configurable as inputs.{name})"
            )
        return value

    def edit_text(self, configured: str | None, who: str) -> str | None:
        """The edit instruction of an editing guidance: its own ``edit_prompt`` option when set,
        else the run's (input ``edit_text``); None (or "") when there is none."""
        text = configured if configured is not None else self.inputs.get("edit_text")
        if text is None:
            return None
        if not isinstance(text, str):
            raise HeadgenError(f"{who}: the edit prompt must be text, got {type(text).__name__}")
        return text.strip() or None


class Guidance:
    """Base class of registered guidance (kind ``guidance``).

    ``__call__`` returns a dict with ``loss_<name>`` tensors (weighted by ``lambda_<name>`` in
    the stage's ``losses``) and logged scalars such as ``grad_norm`` and ``t``.

    Lifecycle, called by the optimize stage: :meth:`on_stage_start` once the stage's length is
    known; :meth:`param_groups` for a guidance that trains weights of its own (kept in
    :meth:`module`, so they are saved in the stage checkpoint and restored on ``--resume``);
    :meth:`on_step_end` after every optimiser step.
    """

    required_modes: tuple[str, ...] = ("rgb",)
    """Renderer outputs this guidance reads."""

    def __init__(self, cfg: Any, ctx: RunContext):
        self.cfg = cfg

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the inputs this guidance reads besides the render (``GuidanceInput.inputs``)."""
        return ()

    def to(self, device: torch.device) -> Guidance:
        module = self.module()
        if module is not None:
            module.to(device)
        return self

    def on_stage_start(self, total_steps: int) -> None:
        """Called once before the first step with the stage's number of steps (for schedules)."""

    def module(self) -> nn.Module | None:
        """The guidance's own trainable weights (None: it trains nothing). The stage holds it in its
        module tree: it is checkpointed with the representation and restored exactly on resume."""
        return None

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of this guidance's trainable parameters (each trained at :meth:`group_lr`)."""
        return {}

    def group_lr(self, name: str) -> Scalar:
        """Learning rate (a constant or schedule) of the guidance's group ``name``, unless the stage's
        ``optimizer.groups`` names the group."""
        raise NotImplementedError(f"guidance {type(self).__name__} has parameter groups but no group_lr")

    def on_step_end(self, step: int) -> bool:
        """Called after every optimiser step; True when the parameter set changed (the stage then
        re-reads :meth:`param_groups`)."""
        return False

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError(f"guidance {type(self).__name__} does not implement __call__")
