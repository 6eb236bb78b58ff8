"""What the training commands on a UV data folder share (``texture-ldm``, ``pbr-decoders``): the
options every one of them takes, the checks on them, the run from a fresh or resumed
:class:`TrainingFolder` to the output, and that output moved into ``OUT`` only once complete.

A command subclasses :class:`UVTrainer` with its model: ``_prepare`` (load and set up on the data),
``_optimizer``, ``step``, ``_weights`` / ``_load_weights`` (what a checkpoint holds besides the
optimizer and random-generator state, which are handled here) and ``_write_model``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.train.checkpoints import TrainingFolder, train_steps
from headgen.train.uv_data import UVDataset, check_folder


class UVTrainer(ABC):
    """One training command over a UV data folder; ``run()`` trains to ``options['steps']`` (from the
    newest checkpoint with ``options['resume']``) and writes the model into ``options['out']``."""

    desc = "training"
    """The progress bar's label, also named by the non-finite-loss error."""
    need_triples = False
    """Whether the data folder must hold (diffuse, specular, normal) triples."""

    def __init__(self, options: dict[str, Any], progress: bool = True):
        self.o = options
        self.progress = progress
        self.out = Path(options["out"]).expanduser()
        self.folder = TrainingFolder(self.out, options, keep=options["keep_checkpoints"])
        self.device = torch.device(options["device"])

    # ------------------------------------------------------------------ what a command supplies
    @abstractmethod
    def _prepare(self, ds: UVDataset) -> None:
        """Load the base model's parts and set them up on ``ds``."""

    @abstractmethod
    def _optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over what is trained (its state is checkpointed)."""

    @abstractmethod
    def step(self) -> float:
        """One optimiser step on a batch drawn with ``self.g``; the loss."""

    @abstractmethod
    def _weights(self) -> dict[str, Tensor]:
        """The trained tensors a checkpoint stores, by name."""

    @abstractmethod
    def _load_weights(self, weights: dict[str, Tensor]) -> None:
        """Put a checkpoint's :meth:`_weights` back."""

    @abstractmethod
    def _write_model(self, folder: Path, ds: UVDataset) -> dict[str, Any]:
        """Write the trained model into ``folder``; what ``training.json`` records of it (the options
        are added)."""

    # ------------------------------------------------------------------ shared
    def _check_options(self) -> None:
        o = self.o
        if o["steps"] < 1 or o["batch_size"] < 1 or o["checkpoint_every"] < 1:
            raise HeadgenError("--steps, --batch-size and --checkpoint-every must be at least 1")
        if o["resolution"] is not None and (o["resolution"] < 8 or o["resolution"] % 8):
            raise HeadgenError(f"--resolution {o['resolution']}: a multiple of 8 (the VAE's factor), e.g. 512")

    def _checkpoint(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return self._weights(), {"optimizer": self.opt.state_dict(), "rng": self.g.get_state()}

    def run(self) -> Path:
        self._check_options()
        ds = check_folder(self.o["data"], need_triples=self.need_triples)
        ckpt = self.folder.start(self.o["resume"], ds.fingerprint())
        self._prepare(ds)
        self.opt = self._optimizer()
        self.g = torch.Generator().manual_seed(self.o["seed"])
        start = 0
        if ckpt is not None:
            if ckpt.step > self.o["steps"]:
                raise HeadgenError(f"--steps {self.o['steps']} is below the checkpoint's step {ckpt.step}: give "
                                   f"--steps {ckpt.step} or more")
            self._load_weights(ckpt.weights)
            self.opt.load_state_dict(ckpt.state["optimizer"])
            self.g.set_state(ckpt.state["rng"])
            start = ckpt.step
            print(f"resuming from step {start} ({ckpt.path})", flush=True)
        train_steps(self.folder, start, self.o["steps"], self.o["checkpoint_every"], self.step, self._checkpoint,
                    self.desc, self.progress)
        return self.save(ds)

    def save(self, ds: UVDataset) -> Path:
        """The model and ``training.json``, written complete into a temporary folder and then moved
        into OUT item by item (a run killed while the model is being written leaves OUT as it was)."""
        partial = self.out / ".model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        record = self._write_model(partial, ds)
        (partial / "training.json").write_text(json.dumps({**record, "options": self.folder.options}, indent=2)
                                               + "\n", encoding="utf-8")
        for item in sorted(partial.iterdir()):
            target = self.out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
        partial.rmdir()
        return self.out


def add_data_options(p: argparse.ArgumentParser, data_help: str, model_help: str) -> None:
    """--data, --out, --model, --pretrained, --steps, --batch-size: the first options of every command."""
    p.add_argument("--data", required=True, type=Path, help=data_help)
    p.add_argument("--out", required=True, type=Path, help="output folder (new, or a run to --resume)")
    p.add_argument("--model", default="sd15", help=model_help)
    p.add_argument("--pretrained", type=Path, help="a local Stable Diffusion folder (replaces --model's location)")
    p.add_argument("--steps", type=int, default=20000, help="total optimiser steps (default 20000)")
    p.add_argument("--batch-size", type=int, default=4)


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    """--checkpoint-every, --keep-checkpoints, --resume (see :mod:`headgen.train.checkpoints`)."""
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
