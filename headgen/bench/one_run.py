"""One bench run: start it as a normal run, score it, and turn its summary into a table row. Used by
the sequential loop of :mod:`headgen.bench.runner` and by Ray workers (:mod:`headgen.bench.ray_launcher`)."""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from pathlib import Path
from typing import Any

from headgen.errors import HeadgenError

OK, FAILED = "ok", "failed"


def _reset_peaks(device: str) -> None:
    """Per-run peak memory in one long process: reset the kernel's RSS high-water mark (Linux
    >= 4.0; best effort) and torch's CUDA peak counter before the run."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    import torch

    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _find_run_dir(output_dir: Path) -> Path | None:
    found = sorted(output_dir.glob("*/*@*/config.yaml"))
    return found[-1].parent if found else None


def run_one(spec: dict[str, Any], *, verbose: bool = False) -> dict[str, Any]:
    """Run one grid cell (start_run + scoring) and return its table row; never raises for a run's failure."""
    from headgen import pipeline
    from headgen.bench.metrics import score_run
    from headgen.config.recipe import ModelSpec
    from headgen.config.typed import parse

    bench_dir = Path(spec["bench_dir"])
    out = Path(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {k: spec[k] for k in ("key", "method", "recipe", "prompt", "seed")}
    row.update(status=FAILED, error="", run_dir="", prior=spec["prior"], device=spec["device"], notes="")
    log_path = out / "run.log"
    row["log"] = str(log_path.relative_to(bench_dir))
    t0 = time.perf_counter()
    root: Path | None = None
    with open(log_path, "a", encoding="utf-8") as log_file, contextlib.redirect_stdout(log_file), \
            contextlib.redirect_stderr(log_file):
        try:
            _reset_peaks(spec["device"])
            root = pipeline.start_run(spec["recipe"], spec["overrides"], verbose=verbose)
            row["wall_seconds"] = round(time.perf_counter() - t0, 3)
            summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
            row.update(_from_summary(summary))
            t1 = time.perf_counter()
            device = pipeline.resolve_device(summary["device"])
            models = {k: parse(ModelSpec, v, path=f"models.{k}") for k, v in spec["models"].items()}
            metrics, notes = score_run(root, prior=summary["prior"], clip_models=spec["clip_models"],
                                       demo_clip=spec["demo_clip"], models=models,
                                       resolution=spec["eval_resolution"], device=device,
                                       gt_resolution=spec["gt_resolution"])
            row["eval_seconds"] = round(time.perf_counter() - t1, 3)
            row["metrics"] = metrics
            row["notes"] = "; ".join(notes)
            row["status"] = OK
        except HeadgenError as exc:
            row["error"] = str(exc)
            traceback.print_exc()
        except Exception as exc:  # noqa: BLE001 - one run's bug must not stop the grid; it is recorded
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    row.setdefault("wall_seconds", round(time.perf_counter() - t0, 3))
    root = root or _find_run_dir(out)
    if root is not None:
        row["run_dir"] = str(Path(root).resolve().relative_to(bench_dir.resolve()))
    return row


def _from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    stages = []
    for s in summary.get("stages", []):
        steps, seconds = int(s.get("steps") or 0), float(s.get("seconds") or 0.0)
        its = round(steps / seconds, 3) if steps and seconds > 0 else None
        stages.append({"name": s["name"], "kind": s.get("kind", ""), "steps": steps, "seconds": seconds, "its": its})
    steps = sum(s["steps"] for s in stages)
    opt_seconds = sum(s["seconds"] for s in stages if s["steps"])
    mem = summary.get("peak_memory_mb", {})
    return {
        "prior": summary.get("prior"), "device": summary.get("device"), "stages": stages,
        "total_seconds": summary.get("total_seconds"),
        "its": round(steps / opt_seconds, 3) if steps and opt_seconds > 0 else None,
        "peak_cpu_rss_mb": mem.get("cpu_rss"), "peak_gpu_mb": mem.get("gpu_allocated"),
        "assets": summary.get("assets", {}), "run_metrics": summary.get("metrics", {}),
    }
