"""The stage protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headgen.context import RunContext
from headgen.errors import ConfigError


class Stage:
    """One step of a method. Subclasses are registered under kind ``stage``."""

    def __init__(self, cfg: Any, name: str):
        self.cfg = cfg
        self.name = name

    @property
    def steps(self) -> int:
        """Optimisation steps (0 for plain-code stages)."""
        return int(getattr(self.cfg, "steps", 0))

    def run(self, ctx: RunContext, resume_checkpoint: Path | None = None) -> None:
        """Do the work; leave results in ``ctx.state`` / ``ctx.metrics`` / ``ctx.assets``."""
        raise NotImplementedError(f"stage kind {type(self).__name__} does not implement run()")

    def build_representation(self, ctx: RunContext, component: Any) -> Any:
        """The representation this stage works on: a new one built from ``component`` (starting from
        the previous stage's result when there is one), or the previous stage's as it is."""
        previous = ctx.state.get("representation")
        if component is None:
            if previous is None:
                raise ConfigError(
                    f"stages.{self.name}.representation: no earlier stage left a representation, so this stage "
                    "must say which one to build ({type: ..., ...})"
                )
            return previous.to(ctx.device)
        rep = component.build(ctx)
        if previous is not None:
            rep.load_from(previous)
        return rep.to(ctx.device)

    def can_resume_from(self, stage_dir: Path) -> Path | None:
        """The checkpoint to continue from if this stage was interrupted, else None."""
        return None
