"""``launch.py --config RECIPE --dry-run``: every stage once at full size, on random weights.

The recipe runs on full-size random-weight stand-ins of its models
(:mod:`headgen.models.full_size`, loaded through ``from_pretrained`` with ``prior: pretrained``) at
its own resolutions and model sizes; only counts are cut: one step per optimise stage, a few
initialisation, distillation and sampling steps, a CLIP pool of 2, two hair colours, two video
frames. What it catches is what tiny test models cannot: channel counts, cross-attention widths,
ControlNet conditioning sizes, VAE factors, dtypes and memory. The images it makes are noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headgen.config.typed import to_plain
from headgen.prior.choice import models_used

# Count-like options and the largest value a dry run keeps: (key, cap). Resolutions are never cut.
CUTS: dict[str, int] = {
    "init_steps": 2,  # DMTet's fit to the head model
    "distill_steps": 2,  # NeRF -> DMTet conversion
    "sample_steps": 2,  # DDIM steps of sample-refine's target
    "pool_size": 2,  # CLIP identity candidates (each is 30 ViT-L/14 images: ~40 s on 2 CPU cores)
    "turntable_frames": 2,
    "frames": 2,
}
LIST_CUTS: dict[str, int] = {"colours": 2}  # hair colour candidates

BANNER = """\
================================================================================
  DRY RUN: full-size models with RANDOM weights ({folder}),
  every stage once at the recipe's resolutions. It checks shapes, dtypes, time
  and memory; the images and meshes it makes are noise.
================================================================================"""


def _cuts(node: Any, path: str, out: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if key in CUTS and isinstance(value, int) and not isinstance(value, bool) and value > CUTS[key]:
                out.append(f"{where}={CUTS[key]}")
            elif key in LIST_CUTS and isinstance(value, list) and len(value) > LIST_CUTS[key]:
                out.append(f"{where}=[{', '.join(str(v) for v in value[: LIST_CUTS[key]])}]")
            else:
                _cuts(value, where, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _cuts(value, f"{path}.{i}", out)


def count_cuts(plain: dict[str, Any]) -> list[str]:
    """Overrides that cut the counts of a composed recipe's stages (one step per optimise stage)."""
    out: list[str] = []
    for name, stage in plain["stages"].items():
        if stage.get("kind") == "optimize" and stage.get("steps", 1) > 1:
            out.append(f"stages.{name}.steps=1")
        _cuts({k: v for k, v in stage.items() if k != "steps"}, f"stages.{name}", out)
    return out


def dry_run_overrides(recipe: str, overrides: list[str], log: Callable[[str], None] = print) -> list[str]:
    """The overrides that turn a run of ``recipe`` into its dry run (the user's ``overrides`` first)."""
    from headgen.models.full_size import CACHE, ensure_full_size
    from headgen.pipeline import load_recipe

    cfg, _ = load_recipe(recipe, overrides)  # an edit's prompt comes from its source run
    extra: list[str] = ["prior=pretrained", "dry_run=true"]
    for name in models_used(cfg):
        folder = ensure_full_size(name, cfg.models[name], log)
        extra.append(f"models.{name}.local_dir={folder}")
    log(BANNER.format(folder=CACHE))
    return [*overrides, *count_cuts(to_plain(cfg)), *extra]


def report(run_dir: Any) -> str:
    """Per stage: steps, seconds (model loading included) and peak resident memory, from summary.json."""
    import json
    from pathlib import Path

    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    lines = ["dry run, per stage (seconds include loading the stage's models; peak = resident set):",
             f"  {'stage':<16} {'kind':<9} {'steps':>5} {'seconds':>8} {'peak GB':>8}"]
    for s in summary["stages"]:
        peak = s.get("peak_rss_mb")
        lines.append(f"  {s['name']:<16} {s['kind']:<9} {s.get('steps', 0):>5} {s.get('seconds', 0.0):>8.1f} "
                     f"{peak / 1024 if peak else float('nan'):>8.1f}")
    lines.append(f"  total {summary.get('total_seconds', 0.0):.0f} s; process peak "
                 f"{summary.get('peak_memory_mb', {}).get('cpu_rss', float('nan')) / 1024:.1f} GB")
    return "\n".join(lines)
