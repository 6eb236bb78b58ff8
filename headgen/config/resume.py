"""Overrides given with ``--resume``: change what is still to come, never what a result was made with.

``python launch.py --resume RUN stages.carve.optimizer.lr=1e-4`` continues RUN with a new value, as the
error messages of a diverged stage advise. Only settings of unfinished stages may change (config.yaml
must keep describing the finished stages' results); in the stage that continues from its checkpoint,
only what the checkpoint does not fix (step count, loss weights, learning rates and optimiser
hyper-parameters, guidance options other than its type).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from headgen.config.compose import parse_overrides
from headgen.errors import ConfigError

CHECKPOINTED_STAGE_MAY_CHANGE = re.compile(
    r"(steps|checkpoint_every|log_every|losses\..+|optimizer\.(lr|betas|eps|weight_decay|grad_clip)(\..*)?"
    r"|optimizer\.groups\..+|guidance\.(?!type$).+)"
)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths of every leaf of a plain config (lists are leaves)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def apply_resume_overrides(
    plain: dict[str, Any], overrides: list[str], finished: list[str], checkpointed: str | None
) -> tuple[dict[str, Any], list[str]]:
    """(the run's config with ``overrides`` applied, the dotted paths that changed). ``finished``:
    the stages already done; ``checkpointed``: the stage that continues from a checkpoint, if any."""
    out = copy.deepcopy(plain)
    for key, value in parse_overrides(overrides):
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--resume override '{key}': {'.'.join(parts[: i + 1])} is not a group of settings "
                                  "of this run (see its config.yaml)")
            node = node[part]
        if isinstance(node.get(parts[-1]), dict) and isinstance(value, dict):
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
    before, after = flatten(plain), flatten(out)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, object()) != after.get(k, object()))
    for path in changed:
        parts = path.split(".")
        if parts[0] != "stages" or len(parts) < 3:
            raise ConfigError(f"--resume override of '{path}': only settings of unfinished stages can change when a "
                              "run continues (this one is the whole run's); start a new run to change it")
        stage, rest = parts[1], ".".join(parts[2:])
        if stage in finished:
            raise ConfigError(f"--resume override of '{path}': stage '{stage}' is finished, and its result was made "
                              "with the old value; start a new run to change it")
        new_group = rest.startswith("optimizer.groups.") and path not in before
        if stage == checkpointed and (new_group or not CHECKPOINTED_STAGE_MAY_CHANGE.fullmatch(rest)):
            raise ConfigError(
                f"--resume override of '{path}': stage '{stage}' continues from its checkpoint, which fixes this "
                "setting; it may change steps, losses, learning rates, optimiser hyper-parameters and guidance "
                "options (or remove its last.ckpt to restart the stage)"
            )
    return out, changed
