"""The state one run carries from stage to stage."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from headgen.config.recipe import RunConfig
from headgen.errors import HeadgenError
from headgen.prior.choice import PriorChoice
from headgen.rundir import RunDir, Stamp


@dataclass
class RunContext:
    """What every stage sees: the validated config, the run directory, the device, and the
    artifacts earlier stages left (``state['representation']`` is the current head)."""

    config: RunConfig
    plain_config: dict[str, Any]
    run_dir: RunDir
    device: torch.device
    verbose: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)
    current_stage: str = ""
    run_id: str = ""
    """state.json's ``run_id``: recorded in every stage result and checkpoint this run writes."""
    chosen_prior: PriorChoice | None = None
    """Set once when the run starts (:func:`headgen.prior.choose_prior`); read through :attr:`prior`."""
    live_viewer: Any = None
    """A :class:`headgen.viewer.live.LiveViewer` when the run was started with ``--viewer``."""
    _head: Any = None
    _said: set[str] = field(default_factory=set)

    @property
    def prior(self) -> PriorChoice:
        """Where each model of this run comes from: pretrained weights or the demo prior."""
        if self.chosen_prior is None:
            raise HeadgenError("the run's prior was not chosen: call headgen.prior.choose_prior when the run starts")
        return self.chosen_prior

    def stamp(self, stage: str) -> Stamp:
        """What a file written by ``stage`` of this run records about its origin."""
        return Stamp(stage, self.config.name, self.run_id)

    def stage_seed(self, stage: str) -> int:
        """A per-stage seed, so stages are independent and a resumed stage replays exactly."""
        return (self.config.seed * 1_000_003 + zlib.crc32(stage.encode())) % (2**63 - 1)

    def generator(self, stage: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.stage_seed(stage))

    @property
    def head(self) -> Any:
        """The head model named by ``head:`` in the recipe (loaded once, on first use)."""
        if self._head is None:
            self._head = self.config.head.build().load()
        return self._head

    def log(self, message: str) -> None:
        print(message, flush=True)

    def log_once(self, message: str) -> None:
        """:meth:`log`, unless this run already said exactly this (e.g. two exporters reading one take)."""
        if message not in self._said:
            self._said.add(message)
            self.log(message)
