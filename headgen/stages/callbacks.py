"""Lightning callbacks shared by every optimize stage."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, TQDMProgressBar

from headgen.errors import NonFiniteLossError
from headgen.rundir import atomic_write, promote_checked


class AtomicCheckpoint(Callback):
    """Keep ``last.ckpt`` (with its SHA-256 in ``last.ckpt.sha256``, checked on ``--resume``) at the last
    good state, every ``every`` steps and at the end.

    "Good" means the next step computed a finite loss and finite gradients from those parameters: the
    state after step N is written to ``last.ckpt.next`` and becomes ``last.ckpt`` only when step N+1
    has gone through. A step whose loss or gradient is not finite raises before that, and parameters
    that are not finite raise before anything is written, so a diverged stage leaves the checkpoint
    from which a lower learning rate can continue (the new state is discarded). Both moves are
    atomic (temporary file + rename): a killed process leaves one checkpoint or the other, whole.
    """

    def __init__(self, path: Path, every: int):
        self.path = Path(path)
        self.pending = self.path.with_name(self.path.name + ".next")
        self.every = every

    def _write(self, trainer: pl.Trainer, path: Path) -> None:
        module = trainer.lightning_module
        bad = [n for n, t in module.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
        if bad:
            kept = f"the last good checkpoint is kept at {self.path}" if self.path.exists() else "no checkpoint yet"
            stage = getattr(module, "stage_name", "NAME")
            raise NonFiniteLossError(
                f"stage {stage}, step {trainer.global_step}: parameter {bad[0]} is not finite after the optimiser "
                f"step; {kept}. Lower the learning rate, then --resume the run directory with the new value "
                f"(e.g. --resume RUN stages.{stage}.optimizer.lr=...)."
            )
        atomic_write(path, lambda p: trainer.save_checkpoint(str(p)))

    def _promote(self) -> None:
        if self.pending.is_file():
            promote_checked(self.pending, self.path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.pending.unlink(missing_ok=True)  # left by a killed process: not known to be good

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._promote()  # this step's loss and gradients were finite: the state before it is good
        step = trainer.global_step
        if step % self.every == 0 or step >= (trainer.max_steps or 0):
            self._write(trainer, self.pending)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, self.pending)  # the stage is over: no next step to wait for
        self._promote()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.pending.unlink(missing_ok=True)


LOG_UPDATES = 20
"""Bar updates per stage when the output is not a terminal (a log file, CI, a bench run.log)."""


def refresh_every(max_steps: int, interactive: bool) -> int:
    """Steps between bar updates: every step on a terminal; otherwise about ``LOG_UPDATES`` per
    stage, because each update is a new line in a log (20000 steps would write ~2 MB of bars)."""
    if interactive or max_steps <= 0:
        return 1
    return max(1, math.ceil(max_steps / LOG_UPDATES))


class StageProgressBar(TQDMProgressBar):
    """One bar per stage: ``[carve] 120/300 ... it/s, loss=...``."""

    def __init__(self, stage: str):
        super().__init__(refresh_rate=1)
        self.stage = stage
        self._base_rate = self._refresh_rate  # TQDM_MINITERS and the like, as Lightning resolved them

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        bar.set_description(f"[{self.stage}]")
        return bar

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        interactive = bool(getattr(sys.stdout, "isatty", lambda: False)())
        self._refresh_rate = max(self._base_rate, refresh_every(trainer.max_steps or 0, interactive))
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description(f"[{self.stage}]")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
