"""Shared fixtures. Test-only plugins live in tests/plugins, OUTSIDE the installed packages, and
are loaded the way users load theirs (``--plugin toy_parts``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from testpaths import REPO  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Every cache (heads, hair, CLIP pools, text embeddings) goes to a temporary folder, never the
    user's ~/.cache/headgen; subprocesses inherit it through the environment."""
    before = os.environ.get("HEADGEN_CACHE_DIR")
    os.environ["HEADGEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("headgen-cache"))
    yield
    if before is None:
        os.environ.pop("HEADGEN_CACHE_DIR", None)
    else:
        os.environ["HEADGEN_CACHE_DIR"] = before


FIRST = (
    "test_dry_run_full_size.py", "test_headsculpt.py", "test_bench.py", "test_dreamface.py",
    "test_dreamface_resume.py", "test_iesd_edit.py", "test_demo_convergence.py", "test_headartist.py",
    "test_viewer.py", "test_prior_mode.py", "test_dreamface_texture_edit.py", "test_lifecycle_hooks.py",
    "test_headartist_edit.py",
)
"""Test files that start first, longest first (about 420, 175, 85, 75, 50, 50, 45, 35, 30, 20, 20, 20
and 20 s of one worker, measured with ``--durations``). Under the README's ``-n 2 --dist loadfile
--no-loadscope-reorder`` a worker takes the next file when it is free, so longest-first leaves short
files for the end and the two workers finish close together. The full-size dry runs stay in one file:
two at once would need more than 24 GB. The texture-edit file edits test_dreamface.py's shared run,
so it starts after that file."""


def pytest_collection_modifyitems(config, items):
    order = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(FIRST)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def _threads_per_worker():
    """Under pytest-xdist (``-n N``) each worker gets its share of the cores for torch's intra-op
    threads: N workers with every core each oversubscribe the machine (small ops mostly spin)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    yield


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same global torch seed, so a test that draws without its own
    generator is reproducible (and its outcome does not depend on which tests ran before it)."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).
    Tiny models and reduced runs are many small ops: on a shared 2-core machine a second thread mostly
    spins (measured: test_strategies.py 52 s with torch's default threads, 7 s with one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_plugin():
    """Register the toy parts (idempotent)."""
    from headgen.registry import load_plugins

    load_plugins(["toy_parts"])
    return "toy_parts"


@pytest.fixture
def subprocess_env(tmp_path):
    """Environment for running launch.py in a subprocess with the test plugins importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(REPO), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    import torch

    # as many torch threads as this process: float reductions then match to the bit (resume tests
    # compare a subprocess's tensors with in-process ones; under pytest-xdist a worker has fewer)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env
