"""Where headgen keeps what it can rebuild: ``$HEADGEN_CACHE_DIR`` (default ``~/.cache/headgen``).

Every cache lives in a folder of that root (``heads/``, ``hair/``, ``clip-pools/``,
``text-embeddings/``), so one variable moves or isolates all of them (the tests point it at a
temporary folder). A config value may start with ``$HEADGEN_CACHE_DIR`` to name a folder under it.

A cache whose values come from a model's weights keys them by what was loaded, not only by where it
was loaded from (:func:`headgen.digest.files_fingerprint`; ``headgen.models.fingerprint`` applies it to a model),
so that retraining or replacing the weights in the same folder is noticed.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "HEADGEN_CACHE_DIR"
PREFIX = "$" + ENV


def cache_root() -> Path:
    """``$HEADGEN_CACHE_DIR``, or ``~/.cache/headgen`` when it is unset or empty."""
    root = os.environ.get(ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "headgen"


def cache_path(name: str) -> Path:
    """The folder of one cache, e.g. ``cache_path("hair")``."""
    return cache_root() / name


def resolve_cache_dir(value: str) -> Path:
    """A configured cache folder: ``$HEADGEN_CACHE_DIR/...`` is taken under :func:`cache_root`, ``~`` is
    expanded, anything else is used as it is."""
    if value == PREFIX or value.startswith(PREFIX + "/"):
        return cache_root() / value[len(PREFIX) + 1 :]
    return Path(value).expanduser()
