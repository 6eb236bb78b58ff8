"""Running recipes from tests: in-process under the demo prior, the overrides that make DreamFace
small, and killing a launch.py subprocess mid-stage (importable because tests/conftest.py puts
tests/plugins on sys.path)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from contextlib import redirect_stdout
from pathlib import Path

import torch

from headgen.cli import main

DREAMFACE_TINY = [
    "stages.coarse.selector.pool_size=16", "stages.coarse.selector.resolution=32", "stages.coarse.selector.lights=1",
    "stages.carve.steps=2", "stages.carve.renderer.resolution=64", "stages.carve.guidance.resolution=64",
    "stages.hair.selector.resolution=32", "stages.hair.selector.lights=1",
    "stages.texture-latent.steps=2", "stages.texture-image.steps=2",
    "stages.texture-image.renderer.resolution=64", "stages.texture-image.guidance.resolution=64",
    "stages.export.exporters=[{type: obj, filename: head.obj}]",
]
"""Overrides that shrink methods/dreamface.yaml for tests on tiny models: 2 steps in carve and in each
texture stage, 32-64 px selectors and renders, an OBJ export only."""


HEADSCULPT_RECIPE = "methods/headsculpt.yaml"
HEADSCULPT_PREVIEW = ["stages.export.exporters.2.resolution=96", "stages.export.exporters.2.turntable_frames=3",
                      "stages.export.exporters.2.turntable_resolution=64"]

# Small hash grids, 32 px volume renders with 32 samples guided at 128 px (16x16 latents), grid 32.
HEADSCULPT_REDUCED = [
    *(f"stages.coarse.representation.{field}_encoding.{k}={v}" for field in ("density", "color")
      for k, v in (("levels", 8), ("log2_hashmap_size", 14), ("max_resolution", 256))),
    "stages.coarse.representation.prior_resolution=48", "stages.coarse.representation.export_resolution=48",
    "stages.coarse.representation.export_texture_size=256",
    "stages.coarse.steps=30", "stages.coarse.renderer.resolution=32", "stages.coarse.renderer.num_samples=32",
    "stages.coarse.guidance.resolution=128",
    "stages.convert.converter.dmtet.resolution=32",
    "stages.convert.converter.dmtet.color_encoding.levels=12",
    "stages.convert.converter.dmtet.color_encoding.log2_hashmap_size=14",
    "stages.convert.converter.dmtet.color_encoding.max_resolution=512",
    "stages.convert.converter.dmtet.export_texture_size=256",
    "stages.convert.converter.distill_steps=60", "stages.convert.converter.distill_points=4096",
    "stages.fine.steps=50", "stages.fine.renderer.resolution=64",
    "stages.fine.guidance.resolution=128",
    *HEADSCULPT_PREVIEW,
]
"""methods/headsculpt.yaml reduced for tests (tests/test_headsculpt.py, the full-size edit dry run):
its hyper-parameters unchanged apart from sizes and step counts."""


def launch_demo(recipe: str, out: Path, *overrides: str) -> Path:
    """``launch.py --config recipe --output-dir out prior=demo overrides...``; the run directory.
    Fails the test with the end of the output when the run does not exit 0."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["--config", recipe, "--output-dir", str(out), "prior=demo", *overrides])
    assert code == 0, buf.getvalue()[-3000:]
    return Path(buf.getvalue().strip().splitlines()[-1].removeprefix("Run directory: "))


def run_metrics(run: Path) -> dict[str, float]:
    """The ``metrics`` of a finished run's summary.json."""
    return json.loads((run / "summary.json").read_text())["metrics"]


def kill_after_first_checkpoint(proc: subprocess.Popen, out: Path, pattern: str, stage: str,
                                timeout_s: float, settle_s: float) -> tuple[Path, int]:
    """SIGKILL ``proc`` ``settle_s`` after its first ``out.glob(pattern)`` checkpoint of ``stage``
    appears; (run directory, global step of the checkpoint). Fails the test with the process output
    when no checkpoint comes within ``timeout_s`` or the stage had already finished."""
    deadline = time.time() + timeout_s
    ckpts: list[Path] = []
    while time.time() < deadline and not ckpts and proc.poll() is None:
        ckpts = list(out.glob(pattern))
        time.sleep(0.05)
    assert ckpts, proc.communicate()[0].decode()[-3000:]
    time.sleep(settle_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = ckpts[0].parents[2]
    state = json.loads((run / "state.json").read_text())
    assert state["stages"][stage]["status"] == "running", "the run finished before it was killed"
    return run, torch.load(ckpts[0], weights_only=True)["global_step"]
