"""Where headgen keeps what it can rebuild: ``$HEADGEN_CACHE_DIR`` (default ``~/.cache/headgen``).

Every cache lives in a folder of that root (``heads/``, ``hair/``, ``clip-pools/``,
``text-embeddings/``), so one variable moves or isolates all of them (the tests point it at a
temporary folder). A config value may start with ``$HEADGEN_CACHE_DIR`` to name a folder under it.

A cache whose values come from a model's weights keys them by what was loaded, not only by where it
was loaded from (:func:`files_fingerprint`; ``headgen.models.fingerprint`` applies it to a model),
so that retraining or replacing the weights in the same folder is noticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
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


def files_fingerprint(folders: Iterable[Path]) -> str:
    """A short digest of the name, size, mtime and ctime of every file directly in ``folders``.

    Stat-based on purpose: it costs one ``stat`` per file (microseconds), where hashing the weights
    would read gigabytes on every run. Writing a file (``save_pretrained``, a resumed training run,
    ``cp`` of other weights over it) sets both its mtime and its ctime, so new weights give a new
    digest even when their size is unchanged; ctime also changes when a copy restores an old mtime
    (``cp -p``, ``rsync -a``), because nothing can set it back. The price is a recomputed cache
    after a mere ``touch`` or ``chmod``. Links are followed (a Hub snapshot links to its blobs).
    A missing folder is recorded as missing, so it appearing later also changes the digest.
    """
    entries: list[list] = []
    for folder in sorted({Path(f) for f in folders}):
        if not folder.is_dir():
            entries.append([str(folder), "missing"])
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file():
                st = path.stat()
                entries.append([str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
