"""What each kind of registered part must offer, as :class:`typing.Protocol` classes: the stages call
parts through these, so a plugin satisfies a kind by shape, without subclassing anything.

Representations and guidance have base classes with lifecycle hooks
(:class:`representations.base.Representation`, :class:`guidance.base.Guidance`); input providers
have :class:`headgen.inputs.base.InputProvider`. Every part is built from its ``Config`` dataclass
(``cls(config, ...)``), registered with :func:`headgen.registry.register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from headgen.context import RunContext


@runtime_checkable
class Renderer(Protocol):
    """Kind ``renderer``: draws a representation's ``render_input()`` at a batch of cameras."""

    def render(self, scene: Any, cameras: Any, lights: Any, modes: tuple[str, ...] = ("rgb",),
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Images [B,H,W,C] per requested mode (``rgb``, ``normal``, ``latent``, ...)."""
        ...


@runtime_checkable
class CameraSampler(Protocol):
    """Kind ``cameras``: the training views of one optimisation step."""

    def sample(self, step: int, generator: torch.Generator | None = None) -> Any:
        """A batch with ``cameras``, ``lights`` and ``view_labels``."""
        ...


@runtime_checkable
class Selector(Protocol):
    """Kind ``selector``: picks something for a representation without gradients (a ``select`` stage)."""

    def select(self, representation: Any, ctx: RunContext, generator: torch.Generator) -> Any:
        ...


@runtime_checkable
class Converter(Protocol):
    """Kind ``converter``: turns the previous stage's representation into a new one (a ``convert`` stage)."""

    def convert(self, representation: Any, ctx: RunContext) -> Any:
        ...


@runtime_checkable
class Exporter(Protocol):
    """Kind ``exporter``: writes files under ``assets/``; returns ``{asset key: path}`` (an ``export`` stage)."""

    def export(self, representation: Any, ctx: RunContext, assets_dir: Path) -> dict[str, str]:
        ...


__all__ = ["CameraSampler", "Converter", "Exporter", "Renderer", "Selector"]
