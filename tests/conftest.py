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
    return env
