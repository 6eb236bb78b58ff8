"""What identifies the weights a model spec loaded, for caches of values computed with them.

A spec's path or Hub id alone does not: training more steps into a folder (``--resume``) or
copying other weights over it keeps the path. So a cache key also carries:

* for a ``local_dir``: :func:`headgen.digest.files_fingerprint` of the component folders (the name,
  size, mtime and ctime of each file; cheap, see there);
* for a Hub id: the commit the loaded files came from (``config._commit_hash`` of the loaded
  transformers model, else the name of the resolved snapshot folder in the local Hugging Face
  cache, which is that commit). A snapshot's files never change, so the commit is enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headgen.config.recipe import ModelSpec
from headgen.digest import files_fingerprint
from headgen.models.zoo import _subfolder, local_path


def weights_fingerprint(spec: ModelSpec, components: Sequence[str], loaded: Any = None) -> str | None:
    """``files:<digest>`` or ``rev:<commit>`` for the ``components`` of ``spec`` (e.g. text_encoder
    and tokenizer); ``loaded`` is one loaded transformers model of them (its commit is read when the
    spec is a Hub id). None when neither can be found: the caller must then not reuse a cache."""
    if not components:
        raise ValueError("weights_fingerprint needs at least one component")
    if spec.local_dir:
        root = local_path(spec)
        if root is None:
            return None
        folders = []
        for component in components:
            sub = _subfolder(spec, component)
            folders.append(root / sub if sub else root)
        return "files:" + files_fingerprint(folders)
    commit = getattr(getattr(loaded, "config", None), "_commit_hash", None)
    if commit:
        return f"rev:{commit}"
    root = local_path(spec)
    return None if root is None else f"rev:{root.name}"


__all__ = ["weights_fingerprint"]
