"""Running a bench: expand the grid, run each (method, prompt, seed) as a normal run, score it,
and keep going when one fails.

Bench folder: ``<output_dir>/bench/<name>@<YYYYmmdd-HHMMSS>/`` with the runs under
``runs/<run key>/``. Resume rule: running a bench config again reuses the latest folder of that
bench name (unless ``fresh``); a run whose key is already in its ``results.json`` with status
``ok`` (and whose ``summary.json`` is still there) is skipped; failed and missing runs run again.
The run key is ``<method>-<prompt slug>-s<seed>-<hash>``, the hash over the method label, recipe,
overrides, prompt, seed, prior and device, so changing a method's overrides re-runs it.
``results.json`` is rewritten after every run, so a killed bench resumes where it stopped.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headgen.bench.config import BenchConfig
from headgen.bench.one_run import OK, run_one
from headgen.config.typed import to_plain
from headgen.rundir import atomic_write_json, slugify

RESULTS_JSON = "results.json"


# ------------------------------------------------------------------------------- grid
def run_key(method: str, recipe: str, overrides: list[str], prompt: str, seed: int, prior: str, device: str) -> str:
    blob = json.dumps([method, recipe, list(overrides), prompt, seed, prior, device])
    digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
    return f"{slugify(method, 24)}-{slugify(prompt, 32)}-s{seed}-{digest}"


def expand_grid(cfg: BenchConfig, bench_dir: Path) -> list[dict[str, Any]]:
    """One plain (picklable) spec per run, in method x prompt x seed order."""
    specs = []
    for method, entry in cfg.methods.items():
        for prompt in cfg.prompts:
            for seed in cfg.seeds:
                key = run_key(method, entry.recipe, entry.overrides, prompt, seed, cfg.prior, cfg.device)
                out = bench_dir / "runs" / key
                # The bench's keys come last so they win over the method's overrides; a prompt given
                # on the command line is taken literally (no YAML parsing of commas, colons, '#').
                overrides = [*entry.overrides, f"prompt={prompt}", f"seed={seed}",
                             f"prior={cfg.prior}", f"device={cfg.device}", f"output_dir={out}"]
                specs.append({
                    "key": key, "method": method, "recipe": entry.recipe, "prompt": prompt, "seed": seed,
                    "overrides": overrides, "output_dir": str(out), "bench_dir": str(bench_dir),
                    "prior": cfg.prior, "device": cfg.device, "clip_models": list(cfg.clip_models),
                    "demo_clip": cfg.demo_clip, "models": {k: to_plain(v) for k, v in cfg.models.items()},
                    "eval_resolution": cfg.eval_resolution, "gt_resolution": cfg.gt_resolution,
                })
    return specs


# ------------------------------------------------------------------------------- bench folder
def bench_folder(cfg: BenchConfig, fresh: bool = False) -> Path:
    """The latest ``<output_dir>/bench/<name>@*`` folder (resume), or a new one."""
    root = Path(cfg.output_dir) / "bench"
    name = slugify(cfg.name)
    if not fresh:
        existing = sorted(p for p in root.glob(f"{name}@*") if p.is_dir())
        if existing:
            return existing[-1]
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{name}@{stamp}", 1
    while path.exists():
        n += 1
        path = root / f"{name}@{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def previous_rows(bench_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of finished runs recorded in the folder's results.json, by key."""
    path = bench_dir / RESULTS_JSON
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("rows", [])
    except (OSError, json.JSONDecodeError):
        return {}
    done = {}
    for row in rows:
        run_dir = row.get("run_dir")
        if row.get("status") == OK and run_dir and (bench_dir / run_dir / "summary.json").is_file():
            done[row["key"]] = row
    return done


# ------------------------------------------------------------------------------- the bench
def run_bench(cfg: BenchConfig, *, fresh: bool = False, verbose: bool = False,
              log: Callable[[str], None] = print) -> Path:
    """Run (or resume) the bench; returns its folder, holding results.{json,csv,md}, plots, gallery.html."""
    from headgen.bench.report import write_report

    bench_dir = bench_folder(cfg, fresh)
    specs = expand_grid(cfg, bench_dir)
    done = previous_rows(bench_dir)
    rows: dict[str, dict[str, Any]] = {s["key"]: done[s["key"]] for s in specs if s["key"] in done}
    todo = [s for s in specs if s["key"] not in done]
    log(f"bench {cfg.name}: {len(specs)} runs ({len(rows)} already finished, {len(todo)} to run) "
        f"with the {cfg.launcher} launcher; folder {bench_dir}")

    def record(row: dict[str, Any]) -> None:
        rows[row["key"]] = row
        what = f"{row['status']}" + (f": {row['error'].splitlines()[0][:200]}" if row["error"] else "")
        log(f"  [{len(rows)}/{len(specs)}] {row['method']} | {row['prompt']} | seed {row['seed']}: {what} "
            f"({row.get('wall_seconds', 0):.1f} s)")
        _save(bench_dir, cfg, specs, rows)

    if todo:
        if cfg.launcher == "ray":
            from headgen.bench.ray_launcher import run_with_ray

            run_with_ray(todo, cfg, record, verbose=verbose)
        else:
            for spec in todo:
                record(run_one(spec, verbose=verbose))
    ordered = _save(bench_dir, cfg, specs, rows)
    write_report(bench_dir, ordered, cfg)
    failed = sum(r["status"] != OK for r in ordered)
    log(f"bench {cfg.name}: {len(ordered) - failed} ok, {failed} failed; results in {bench_dir}")
    return bench_dir


def _save(bench_dir: Path, cfg: BenchConfig, specs: list[dict[str, Any]],
          rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ordered = [rows[s["key"]] for s in specs if s["key"] in rows]
    atomic_write_json(bench_dir / RESULTS_JSON, {"bench": cfg.name, "config": to_plain(cfg), "rows": ordered})
    return ordered


__all__ = ["expand_grid", "run_bench", "run_key", "run_one"]
