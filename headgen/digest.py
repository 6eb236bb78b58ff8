"""Digests: of tensors (stage results' integrity, learned tokens in cache keys) and of files'
metadata (cache keys of model weights)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
