"""Saving and loading a stage's result (the representation it leaves for the next stage).

``stages/<name>/result.safetensors`` holds the tensors, ``result.json`` the registered type and
its config, so the representation can be rebuilt from the run directory alone (resume, export,
editing from a finished run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from headgen.config.typed import config_class, parse, to_plain
from headgen.errors import ResumeError
from headgen.registry import lookup
from headgen.rundir import atomic_write, atomic_write_json

if TYPE_CHECKING:
    from headgen.context import RunContext

RESULT_TENSORS = "result.safetensors"
RESULT_META = "result.json"


def save_result(stage_dir: Path, representation: Any) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in representation.state_dict().items()}
    atomic_write(stage_dir / RESULT_TENSORS, lambda p: save_file(tensors, str(p)))
    meta = {"type": representation.registered_name, "config": to_plain(representation.cfg)}
    atomic_write_json(stage_dir / RESULT_META, meta)


def has_result(stage_dir: Path) -> bool:
    return (stage_dir / RESULT_TENSORS).is_file() and (stage_dir / RESULT_META).is_file()


def load_result(stage_dir: Path, ctx: RunContext) -> Any:
    """Rebuild the representation a finished stage saved."""
    meta_path = stage_dir / RESULT_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        cls = lookup("representation", meta["type"])
        cfg = parse(config_class(cls), meta["config"], path=f"{meta_path}:config")
        tensors = load_file(str(stage_dir / RESULT_TENSORS))
    except (OSError, KeyError, json.JSONDecodeError, SafetensorError) as exc:
        raise ResumeError(f"{stage_dir}: the saved stage result is missing or corrupt ({exc})") from exc
    rep = cls(cfg, ctx)
    rep.before_load(tensors)
    rep.load_state_dict(tensors)
    return rep.to(ctx.device)


def state_dict_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
