"""Saving and loading a stage's result (the representation it leaves for the next stage).

``stages/<name>/result.safetensors`` holds the tensors, ``result.json`` the registered type and
its config, so the representation can be rebuilt from the run directory alone (resume, export,
editing from a finished run). The safetensors header also records the same description, the stage,
method and run that wrote it (a :class:`~headgen.rundir.Stamp`) and a SHA-256 of the tensors: a result
copied from elsewhere, a byte changed in either file, or a result.json that no longer matches is
refused with one message instead of rebuilding a different head.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from headgen.config.typed import config_class, parse, to_plain
from headgen.digest import tensors_sha256
from headgen.errors import ResumeError, one_line
from headgen.registry import lookup
from headgen.rundir import Stamp, atomic_write, atomic_write_json

if TYPE_CHECKING:
    from headgen.context import RunContext

RESULT_TENSORS = "result.safetensors"
RESULT_META = "result.json"
HEADER_KEY = "headgen"


def save_result(stage_dir: Path, representation: Any, stamp: Stamp | None) -> None:
    """Write the result files; ``stamp`` None (tests of a representation alone) records no stage."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in representation.state_dict().items()}
    meta = {"type": representation.registered_name, "config": to_plain(representation.cfg)}
    if stamp is not None:
        meta.update(asdict(stamp))
    header = {HEADER_KEY: json.dumps({**meta, "sha256": tensors_sha256(tensors)}, sort_keys=True)}
    atomic_write(stage_dir / RESULT_TENSORS, lambda p: save_file(tensors, str(p), metadata=header))
    atomic_write_json(stage_dir / RESULT_META, meta)


def has_result(stage_dir: Path) -> bool:
    return (stage_dir / RESULT_TENSORS).is_file() and (stage_dir / RESULT_META).is_file()


def read_result(stage_dir: Path, expect: Stamp | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(description, tensors) of a saved result, checked against its recorded digest and, unless
    ``expect`` is None, against the stage, method and run that should have written it."""
    where = f"{stage_dir}/{RESULT_TENSORS}"
    try:
        meta = json.loads((stage_dir / RESULT_META).read_text(encoding="utf-8"))
        with safe_open(str(stage_dir / RESULT_TENSORS), framework="pt") as f:
            header = (f.metadata() or {}).get(HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        recorded = json.loads(header) if header is not None else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, SafetensorError) as exc:
        raise ResumeError(f"{stage_dir}: the saved stage result is missing or corrupt ({one_line(exc)})") from exc
    if recorded is None:
        if expect is not None:
            raise ResumeError(f"{where} records no checksum (written by an earlier headgen, or by hand)")
        return meta, tensors
    if not isinstance(recorded, dict) or recorded.get("sha256") != tensors_sha256(tensors):
        raise ResumeError(f"{where} does not match its recorded checksum: the file is corrupt or was changed")
    if {k: v for k, v in recorded.items() if k != "sha256"} != meta:
        raise ResumeError(f"{stage_dir}/{RESULT_META} does not match the description recorded in {RESULT_TENSORS}: "
                          "one of them was changed or copied from another stage")
    if expect is not None and (problem := expect.mismatch(recorded, where)):
        raise ResumeError(problem)
    return meta, tensors


def load_result(stage_dir: Path, ctx: RunContext, expect: Stamp | None) -> Any:
    """Rebuild the representation a finished stage saved (see :func:`read_result` for ``expect``)."""
    meta, tensors = read_result(stage_dir, expect)
    meta_path = stage_dir / RESULT_META
    try:
        cls = lookup("representation", meta["type"])
        cfg = parse(config_class(cls), meta["config"], path=f"{meta_path}:config")
    except (KeyError, TypeError) as exc:
        raise ResumeError(f"{meta_path}: not a stage result description ({one_line(exc)})") from exc
    rep = cls(cfg, ctx)
    rep.before_load(tensors)
    try:
        rep.load_state_dict(tensors)
    except RuntimeError as exc:  # missing or unexpected tensors, wrong shapes
        raise ResumeError(f"{stage_dir}/{RESULT_TENSORS} does not fit a {meta['type']} ({one_line(exc)})") from exc
    return rep.to(ctx.device)


def state_dict_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
