"""The representation protocol: the learnable head a stage optimises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from headgen.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from headgen.context import RunContext


class Representation(nn.Module):
    """Base class of registered representations (kind ``representation``).

    A representation owns the learnable parameters, names them in groups (so a recipe can give
    each group its own learning rate, or freeze it by leaving it out), offers regularisers by
    name (weighted by ``lambda_<name>`` in a stage's ``losses``), and hands the renderer what it
    draws (:meth:`render_input`).

    Lifecycle, called by the optimize stage: :meth:`on_stage_start` once the stage's length is known,
    :meth:`on_step_end` after every optimiser step (a representation whose parameter set changes,
    e.g. Gaussians that densify and prune, returns True; the stage keeps the optimiser state of the
    parameters that stayed and starts the new ones fresh), :meth:`before_load` with a checkpoint's
    tensors before they are loaded on ``--resume`` (to take their shapes).
    """

    def __init__(self, cfg: Any, ctx: RunContext):
        super().__init__()
        self.cfg = cfg

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups; the default is one group ``all``."""
        return {"all": [p for p in self.parameters()]}

    def on_stage_start(self, total_steps: int) -> None:
        """Called once before an optimize stage's first step with its number of steps."""

    def on_step_end(self, step: int) -> bool:
        """Called after every optimiser step; True when parameters were added or removed (the stage
        then re-reads :meth:`param_groups`). Nothing by default."""
        return False

    def before_load(self, state: dict[str, Tensor]) -> None:
        """Called with this representation's tensors of a stage checkpoint before they are loaded
        (names relative to the representation): resize parameters whose count changed. Nothing by default."""

    def head_identity(self) -> Tensor | None:
        """Identity coefficients of the head model this representation was selected from (None: the
        template head), e.g. for landmark maps of the selected head."""
        return None

    def regularizer_names(self) -> list[str]:
        return sorted(n[len("reg_") :] for n in dir(type(self)) if n.startswith("reg_"))

    def regularizer(self, name: str, step: int) -> Tensor:
        """The regulariser ``name`` (a method ``reg_<name>(step)``) as a scalar tensor."""
        fn = getattr(self, f"reg_{name}", None)
        if fn is None:
            known = self.regularizer_names()
            raise ConfigError(
                f"representation {getattr(self, 'registered_name', type(self).__name__)} has no regulariser "
                f"'{name}'{did_you_mean(name, known)}; it offers: {', '.join(known) or '(none)'}"
            )
        return fn(step)

    def load_from(self, previous: Representation) -> None:
        """Start from the previous stage's result (same type: copy every matching tensor)."""
        if type(previous) is not type(self):
            raise ConfigError(
                f"cannot start a {self.registered_name} representation from a "  # type: ignore[attr-defined]
                f"{previous.registered_name}: insert a convert stage between them"  # type: ignore[attr-defined]
            )
        state = previous.state_dict()
        self.before_load(state)
        self.load_state_dict(state)

    def attach(self, backbone: Any) -> None:
        """Called by an optimize stage with its guidance's diffusion backbone (e.g. so a latent
        texture can be decoded with the same VAE); nothing by default."""

    def finalize(self) -> None:
        """Called when an optimize stage ends (e.g. to bake a decoded texture); nothing by default."""

    def guidance_extras(self) -> dict[str, Any]:
        """Extra tensors handed to the guidance (``GuidanceInput.extra``), e.g. a UV texture latent."""
        return {}

    def render_input(self) -> Any:
        """What the renderer draws (a SurfaceGeometry for meshes, the field itself for NeRF)."""
        return self

    @torch.no_grad()
    def metrics(self, ctx: RunContext) -> dict[str, float]:
        """Scores of the current state (e.g. against a demo-prior target); none by default."""
        return {}
