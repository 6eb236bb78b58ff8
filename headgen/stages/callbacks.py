"""Lightning callbacks shared by every optimize stage."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, TQDMProgressBar

from headgen.errors import NonFiniteLossError
from headgen.rundir import atomic_write_checked


class AtomicCheckpoint(Callback):
    """Write ``last.ckpt`` every ``every`` steps and at the end, through a temp file + rename, with its
    SHA-256 in ``last.ckpt.sha256`` (checked on ``--resume``).

    A step whose loss or gradient was not finite raises before this runs, and parameters that are not
    finite (e.g. a step with an overflowing learning rate) raise here, before anything is written: the
    file on disk is always the last good state.
    """

    def __init__(self, path: Path, every: int):
        self.path = Path(path)
        self.every = every

    def _save(self, trainer: pl.Trainer) -> None:
        module = trainer.lightning_module
        bad = [n for n, t in module.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
        if bad:
            kept = f"the last good checkpoint is kept at {self.path}" if self.path.exists() else "no checkpoint yet"
            raise NonFiniteLossError(
                f"stage {getattr(module, 'stage_name', '?')}, step {trainer.global_step}: parameter {bad[0]} is not "
                f"finite after the optimiser step; {kept}. Lower the learning rate, then --resume the run directory "
                "with the new value (e.g. --resume RUN stages.NAME.optimizer.lr=...)."
            )
        atomic_write_checked(self.path, lambda p: trainer.save_checkpoint(str(p)))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step >= (trainer.max_steps or 0):
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)


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
