"""What test workers share under ``pytest -n N``: folders under the session's common temporary
root (the parent of each worker's base temp), built once by whichever worker asks first while the
others wait on a file lock. Without xdist the root is the session's own base temp."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from filelock import FileLock
from runhelpers import launch_demo

DONE = "SHARED_RUN_DONE"


def shared_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(parents=True, exist_ok=True)
    return root


def shared_demo_run(tmp_path_factory, recipe: str, *overrides: str) -> Path:
    """The run directory of ``launch_demo(recipe, ..., *overrides)``, run once per session for all
    workers (the same recipe and overrides give the same run). Tests must only read it."""
    key = hashlib.sha256("\n".join([recipe, *overrides]).encode()).hexdigest()[:16]
    out = shared_root(tmp_path_factory) / "runs" / key
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        done = out / DONE
        if done.is_file():
            return Path(done.read_text())
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same run whichever test asks first (see the one_thread fixture)
        try:
            run = launch_demo(recipe, out, *overrides)  # a failure raises: the next worker retries
        finally:
            torch.set_num_threads(threads)
        done.write_text(str(run))
        return run
