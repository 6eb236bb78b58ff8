"""The ``load`` stage: start from the result of another, finished run (editing recipes).

The source run directory is only read: its files are never written. A frozen copy of the loaded
representation is kept in ``ctx.state['source_representation']`` so later stages can render the
pre-edit head (IESD's InstructPix2Pix control image).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from headgen.context import RunContext
from headgen.errors import ConfigError, ResumeError
from headgen.registry import register
from headgen.rundir import RunDir
from headgen.stages.base import Stage
from headgen.stages.results import has_result, load_result


@dataclass(kw_only=True)
class LoadConfig:
    source: str = ""
    """Run directory to start from (empty: the recipe's top-level `source`)."""
    stage: str | None = None
    """Which of its stages' result to load (null: the last stage that saved one)."""


@register("stage", "load")
class LoadStage(Stage):
    """Load the final (or a named stage's) representation of a finished run; the source is read only."""

    Config = LoadConfig

    def run(self, ctx: RunContext, resume_checkpoint: Path | None = None) -> None:
        source = self.cfg.source or ctx.config.source
        if not source:
            raise ConfigError(
                f"stages.{self.name}: no source run: pass source=RUN_DIR (a finished run directory)"
            )
        try:
            run = RunDir.open(source, "source")
        except ResumeError as exc:
            raise ConfigError(str(exc)) from exc
        state = run.read_state()
        self._check_head(ctx, run)
        order = state.get("order", [])
        if self.cfg.stage is not None:
            if self.cfg.stage not in order:
                raise ConfigError(f"stages.{self.name}.stage: source run has no stage '{self.cfg.stage}' ({order})")
            candidates = [self.cfg.stage]
        else:
            unfinished = [n for n in order if state["stages"][n]["status"] != "done"]
            if unfinished:  # its last result is not what the source recipe makes: say so, do not guess
                done = [n for n in order if state["stages"][n]["status"] == "done"]
                hint = f", or start from a finished stage with stages.{self.name}.stage={done[-1]}" if done else ""
                raise ConfigError(
                    f"stages.{self.name}: the source run {run.root} is not finished (stage '{unfinished[0]}' is "
                    f"{state['stages'][unfinished[0]]['status']}): finish it with --resume {run.root}{hint}"
                )
            candidates = [n for n in reversed(order) if state["stages"][n]["status"] == "done"]
        for name in candidates:
            stage_dir = run.root / "stages" / name
            if has_result(stage_dir):
                rep = load_result(stage_dir, ctx, run.stamp(name))
                ctx.state["representation"] = rep
                frozen = copy.deepcopy(rep).requires_grad_(False)
                ctx.state["source_representation"] = frozen
                ctx.metrics[f"{self.name}/source"] = str(run.root)
                ctx.metrics[f"{self.name}/source_stage"] = name
                return
        raise ConfigError(f"source run {run.root} has no finished stage with a saved result to start from")

    def _check_head(self, ctx: RunContext, run: RunDir) -> None:
        """The edit works on the source's head model (its mesh, landmarks, expressions): a recipe
        whose ``head`` differs would rebuild the source on another head, so it is refused."""
        theirs = run.read_config().get("head") or {}
        mine = ctx.plain_config.get("head") or {}
        # keys both configs have: a run saved before a head option existed is not refused for it
        if any(theirs[k] != mine[k] for k in set(theirs) & set(mine)):
            # the options to add to head=TYPE: those differing from this recipe's (or from null,
            # when head=TYPE resets the node to another type's defaults)
            base = mine if mine.get("type") == theirs.get("type") else {}
            args = " ".join(f"head.{k}={'null' if v is None else v}" for k, v in theirs.items()
                            if k != "type" and v != base.get(k))
            raise ConfigError(
                f"stages.{self.name}: the source run {run.root} was made on head {theirs}, this recipe has {mine}; "
                f"pass head={theirs.get('type')} {args}".rstrip() + " so that the edit works on the same head model"
            )
