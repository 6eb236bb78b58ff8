"""Output folders of the training commands: periodic checkpoints and ``--resume``.

``OUT/checkpoints/step-NNNNNNN/`` holds ``weights.safetensors`` (what the run trains),
``state.pt`` (optimizer state, random generator state, step; read with ``weights_only=True``)
and ``options.json`` (the command's options). A checkpoint is written under a temporary name and
renamed when complete, so a run killed while writing one leaves the previous one intact; the last
``keep`` are kept. ``--resume`` continues from the newest with the same options (only the step
count and the checkpoint settings may change), so a killed run ends where an uninterrupted one
would.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from headgen.errors import HeadgenError

CHECKPOINTS = "checkpoints"
STEP_DIR = re.compile(r"^step-(\d+)$")
CHANGEABLE = frozenset({"steps", "checkpoint_every", "keep_checkpoints", "device", "resume", "progress"})
"""Options a resumed run may change (the rest must be the checkpoint's)."""


@dataclass
class Checkpoint:
    step: int
    weights: dict[str, Tensor]
    state: dict[str, Any]
    options: dict[str, Any]
    path: Path


class TrainingFolder:
    """``OUT`` of one training command: its checkpoints and the check that a resume is consistent."""

    def __init__(self, out: str | Path, options: dict[str, Any], keep: int = 2):
        self.out = Path(out).expanduser()
        self.options = json.loads(json.dumps(options, default=str))  # as it is stored and compared
        self.keep = max(1, keep)

    @property
    def folder(self) -> Path:
        return self.out / CHECKPOINTS

    def checkpoints(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
        return sorted(found)

    def start(self, resume: bool, data_fingerprint: str) -> Checkpoint | None:
        """The checkpoint to continue from (``resume``), or None for a fresh run into a new/empty OUT.
        ``data_fingerprint`` (:meth:`UVDataset.fingerprint`) is stored with the options: a resume on
        changed data would draw other samples than the interrupted run."""
        self.options["data_fingerprint"] = data_fingerprint
        if not resume:
            if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
                what = "has checkpoints of an earlier run" if self.checkpoints() else "is not empty"
                raise HeadgenError(f"--out {self.out} {what}: pass --resume to continue that training, or choose a "
                                   "new --out")
            return None
        found = self.checkpoints()
        if not found:
            raise HeadgenError(f"--resume: {self.out} has no checkpoint ({CHECKPOINTS}/step-N); start without "
                               "--resume")
        ckpt = load_checkpoint(found[-1][1])
        changed = [f"--{k.replace('_', '-')} {self.options.get(k)} (the checkpoint's: {v})"
                   for k, v in ckpt.options.items()
                   if k not in CHANGEABLE and k != "data_fingerprint" and self.options.get(k) != v]
        if ckpt.options.get("data_fingerprint") != data_fingerprint:
            changed.append("the files of --data changed since the checkpoint (added, removed or rewritten textures, "
                           "masks, captions or maps)")
        changed += [f"--{k.replace('_', '-')} (new option, not in the checkpoint)" for k in self.options
                    if k not in ckpt.options and k not in CHANGEABLE]
        if changed:
            raise HeadgenError(f"--resume {self.out}: these options differ from the run being resumed: "
                               f"{'; '.join(changed)}. Resume with the same options (only --steps and the "
                               "checkpoint settings may change) or start a new --out")
        return ckpt

    def save(self, step: int, weights: dict[str, Tensor], state: dict[str, Any]) -> Path:
        from safetensors.torch import save_file

        final = self.folder / f"step-{step:07d}"
        partial = self.folder / f".step-{step:07d}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(partial / "weights.safetensors"))
        torch.save({**state, "step": step}, partial / "state.pt")
        (partial / "options.json").write_text(json.dumps(self.options, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for _, old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """A command's options as stored with its checkpoints (paths absolute, so a resume from another
    working directory compares equal)."""
    return {k: (str(v.expanduser().resolve()) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def load_checkpoint(path: Path) -> Checkpoint:
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path / "weights.safetensors"))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        options = json.loads((path / "options.json").read_text(encoding="utf-8"))
    except Exception as exc:  # any unreadable part makes the checkpoint unusable: say which
        raise HeadgenError(f"checkpoint {path} is not readable ({type(exc).__name__}: {exc}); delete it to resume "
                           "from the one before") from exc
    return Checkpoint(int(state["step"]), weights, state, options, path)



def train_steps(
    folder: TrainingFolder, start: int, steps: int, every: int, step: Callable[[], float],
    checkpoint: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]], desc: str, progress: bool = True,
) -> None:
    """Steps ``start`` .. ``steps`` of a training loop under a progress bar, a checkpoint
    (``checkpoint()`` -> (weights, state)) every ``every`` steps and at the last one; a non-finite
    loss stops with the last checkpoint kept."""
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, disable=not progress)
    for i in bar:
        loss = step()
        if not math.isfinite(loss):
            raise HeadgenError(f"{desc}: the loss became {loss} at step {i + 1}; lower the learning rate(s) and "
                               "--resume from the last checkpoint (it is kept)")
        bar.set_postfix(loss=f"{loss:.4f}")
        if (i + 1) % every == 0 or i + 1 == steps:
            weights, state = checkpoint()
            folder.save(i + 1, weights, state)
