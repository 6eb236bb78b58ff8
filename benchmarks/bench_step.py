"""Where an optimisation step's time goes, per optimise stage of each recipe, at full size.

    python benchmarks/bench_step.py [--recipes dreamface headartist ...] [--dtypes float32 bfloat16]
                                    [--steps 1] [--warmup 1] [--variants [VARIANT ...]] [--out bench_step.json]

Each recipe runs as its dry run does (``launch.py --dry-run``: full-size random-weight stand-ins of
its models through ``from_pretrained``, at the recipe's own resolutions; counts cut), except that
every optimise stage takes ``warmup + steps`` steps. The warm-up steps (model loading, caches,
allocator growth) are dropped; the others are timed. Within each timed step, hooks on the loaded
networks add up the time spent in their passes: UNet, ControlNet, VAE encode and decode (forward
and, where the gradient flows through them, backward) and the text encoder; the renderer's forward
pass is timed too, and "rest" is what is left (rendering's backward, losses, regularisers,
optimiser). ``step / passes`` is the step time over the model-pass time: 1.0 would mean nothing
but the networks costs anything.

CPU: one table per weights dtype (``--dtypes``, default float32 and bfloat16). GPU (when CUDA is
available): fp16, then with ``--variants`` each of the model config's speed options (or those named) on top of it
(``channels_last``, ``attention: classic`` against diffusers' SDPA default, ``compile``), each
with its step-time ratio to plain fp16. The editing recipes edit the result of their source
recipe's benchmark run (full-size sizes), so run them after it (the default order does) or pass
``--source-run RECIPE=RUN_DIR``. Each recipe runs in its own process (in one process the CPU run
kept earlier recipes' memory and reached 24 GB).

The figures are for the hardware it runs on, in one run; results are noise (random weights).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from collections import defaultdict
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = ["dreamface", "headsculpt", "headsculpt-edit", "headartist", "headartist-edit"]
SOURCES = {"headsculpt-edit": "headsculpt", "headartist-edit": "headartist"}
PASSES = ["unet", "controlnet", "vae_encode", "vae_decode", "text_encoder"]
COLUMNS = [*PASSES, "render_forward", "rest"]
HEADERS = {"unet": "UNet", "controlnet": "ControlNet", "vae_encode": "VAE enc", "vae_decode": "VAE dec",
           "text_encoder": "text enc", "render_forward": "render fwd", "rest": "rest"}
# GPU variants: model-config options set on every model of the recipe, on top of fp16.
VARIANTS: dict[str, list[str]] = {
    "channels_last": ["channels_last=true"],
    "classic_attention": ["attention=classic"],
    "compile": ["compile=true"],
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer:
    """Per-step wall time and per-category time inside it, from hooks."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.current: dict[str, float] = defaultdict(float)
        self._t0 = 0.0

    def start(self) -> None:
        _sync()
        self.current = defaultdict(float)
        self._t0 = time.perf_counter()

    def end(self, stage: str, step: int) -> None:
        _sync()
        row = {"stage": stage, "step": step, "seconds": time.perf_counter() - self._t0}
        row.update({k: self.current.get(k, 0.0) for k in [*PASSES, "render_forward"]})
        self.rows.append(row)

    def timed(self, category: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _sync()
            before = sum(self.current.get(k, 0.0) for k in PASSES)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync()
                # Exclusive time: model passes inside (e.g. DreamFace decoding its diffuse map while
                # rendering) count as model passes only.
                nested = sum(self.current.get(k, 0.0) for k in PASSES) - before
                self.current[category] += time.perf_counter() - t0 - nested
        return wrapper

    def _span(self, category: str) -> tuple[Any, Any]:
        """A (start, stop) hook pair adding the time between them to ``category``."""
        starts: list[float] = []

        def start(*_: Any) -> None:
            _sync()
            starts.append(time.perf_counter())

        def stop(*_: Any) -> None:
            _sync()
            if starts:
                self.current[category] += time.perf_counter() - starts.pop()

        return start, stop

    def attach(self, module: torch.nn.Module, category: str, backward: bool = False) -> None:
        """Forward (and backward) pass time of ``module`` into ``category``."""
        pre, post = self._span(category)
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
        if backward:
            bpre, bpost = self._span(category)
            module.register_full_backward_pre_hook(bpre)
            module.register_full_backward_hook(bpost)


def install(timer: StepTimer) -> None:
    """Hook the networks of every backbone the run loads, and the optimise stages' steps."""
    import headgen.prior.load as load
    from headgen.stages.optimize import OptimizeSystem

    original = load.load_pretrained

    def hooked(*args: Any, **kwargs: Any) -> Any:
        backbone = original(*args, **kwargs)
        timer.attach(backbone.unet, "unet")
        for net in backbone.controlnets.values():
            timer.attach(net, "controlnet")
        timer.attach(backbone.vae.encoder, "vae_encode", backward=True)
        timer.attach(backbone.vae.decoder, "vae_decode", backward=True)
        timer.attach(backbone.text.text_encoder, "text_encoder")
        return backbone

    load.load_pretrained = hooked
    OptimizeSystem.on_train_batch_start = lambda self, batch, idx: timer.start()
    OptimizeSystem.on_train_batch_end = lambda self, out, batch, idx: timer.end(self.stage_name, int(self.global_step))
    render = OptimizeSystem.forward_render
    OptimizeSystem.forward_render = lambda self, views: timer.timed("render_forward", render)(self, views)


def run_recipe(recipe: str, out: Path, extra: list[str], model_options: list[str], warmup: int, steps: int,
               log: Path) -> Path:
    """One benchmark run of ``recipe``; returns its run directory."""
    from headgen.cli import main
    from headgen.config.typed import to_plain
    from headgen.dryrun import dry_run_overrides
    from headgen.pipeline import load_recipe
    from headgen.prior.choice import models_used

    path = str(ROOT / "methods" / f"{recipe}.yaml")
    cfg, _ = load_recipe(path, extra)
    plain = to_plain(cfg)
    overrides = dry_run_overrides(path, extra, log=lambda _m: None)
    for name, stage in plain["stages"].items():
        if stage.get("kind") == "optimize" and stage.get("steps", 0) > 0:
            overrides.append(f"stages.{name}.steps={warmup + steps}")
        if stage.get("kind") == "export":  # the export costs nothing this benchmark measures
            overrides.append(f"stages.{name}.exporters=[{{type: obj, filename: head.obj}}]")
    for model in models_used(cfg):
        overrides += [f"models.{model}.{opt}" for opt in model_options]
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        code = main(["--config", path, "--output-dir", str(out), *overrides])
    text = buf.getvalue()
    with log.open("a") as f:
        f.write(f"\n===== {recipe} {' '.join(model_options)}\n{text}")
    if code != 0:
        raise RuntimeError(f"{recipe} failed (exit {code}); its log is in {log}:\n{text[-2000:]}")
    return Path(text.strip().splitlines()[-1].removeprefix("Run directory: "))


def summarise(rows: list[dict[str, Any]], warmup: int) -> list[dict[str, Any]]:
    """Mean over each stage's timed steps (the first ``warmup`` of every stage dropped)."""
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_stage[row["stage"]].append(row)
    out = []
    for stage, stage_rows in by_stage.items():
        timed = stage_rows[warmup:]
        if not timed:
            continue
        mean = {k: sum(r[k] for r in timed) / len(timed) for k in ["seconds", *PASSES, "render_forward"]}
        mean["rest"] = mean["seconds"] - sum(mean[k] for k in [*PASSES, "render_forward"])
        passes = sum(mean[k] for k in PASSES)
        out.append({"stage": stage, "timed_steps": len(timed), **mean, "model_passes": passes,
                    "step_over_passes": mean["seconds"] / passes if passes > 0 else float("inf")})
    return out


def table(results: list[dict[str, Any]]) -> str:
    head = ["recipe", "stage", "precision", "step s", *(HEADERS[c] for c in COLUMNS), "step / passes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['recipe']} | - | {r['precision']} | failed: {r['error'][:80]} |")
            continue
        share = [f"{100 * r[c] / r['seconds']:.0f}%" for c in COLUMNS]
        ratio = f"{r['step_over_passes']:.2f}" + (f" (x{r['vs_baseline']:.2f})" if "vs_baseline" in r else "")
        lines.append(f"| {r['recipe']} | {r['stage']} | {r['precision']} | {r['seconds']:.2f} | "
                     + " | ".join(share) + f" | {ratio} |")
    return "\n".join(lines)


def _ratios(results: list[dict[str, Any]]) -> None:
    """Each row's step time over plain fp16's for the same recipe and stage, in place."""
    ok = [r for r in results if "error" not in r]
    base = {(r["recipe"], r["stage"]): r["seconds"] for r in ok if r["precision"] == "fp16"}
    for r in ok:
        if (r["recipe"], r["stage"]) in base:
            r["vs_baseline"] = r["seconds"] / base[(r["recipe"], r["stage"])]


def child(args: argparse.Namespace) -> None:
    """One recipe in this process (the parent runs each recipe in its own process, so that one
    recipe's models are freed before the next: in one process the CPU run reached 24 GB)."""
    timer = StepTimer()
    install(timer)
    options = json.loads(args.child_options)
    extra = [f"source={args.child_source}"] if args.child_source else []
    out = {"recipe": args.child, "rows": [], "run": None}
    try:
        run = run_recipe(args.child, Path(args.output_dir), extra, options, args.warmup, args.steps,
                         Path(args.output_dir) / "bench_step.log")
        out["run"] = str(run)
        out["rows"] = summarise(timer.rows, args.warmup)
    except Exception as exc:
        out["error"] = str(exc)
    Path(args.child_out).write_text(json.dumps(out))


def run_child(args: argparse.Namespace, recipe: str, options: list[str], source: Path | None) -> dict[str, Any]:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    cmd = [sys.executable, __file__, "--child", recipe, "--child-options", json.dumps(options),
           "--child-out", str(result), "--output-dir", args.output_dir, "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    if source is not None:
        cmd += ["--child-source", str(source)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(result.read_text())
    except (OSError, ValueError):
        return {"recipe": recipe, "rows": [], "error": f"exit {proc.returncode}: {(proc.stderr or '')[-1500:]}"}
    finally:
        result.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16", "float16"],
                   help="CPU weight dtypes (GPU: float16 and --variants)")
    p.add_argument("--steps", type=int, default=1, help="timed steps per optimise stage")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (model loading, caches)")
    p.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS), metavar="VARIANT",
                   help=f"GPU: also each speed option on top of fp16 (all, or those named: {', '.join(VARIANTS)})")
    p.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    p.add_argument("--output-dir", default="outputs/bench-step", help="run directories and the log go here")
    p.add_argument("--source-run", action="append", default=[], metavar="RECIPE=RUN_DIR",
                   help="an earlier full-size benchmark run of an editing recipe's source recipe "
                        "(e.g. headsculpt=outputs/bench-step/headsculpt/...), when that recipe is not benchmarked now")
    p.add_argument("--out", default=None, help="write the figures as JSON here too")
    for hidden in ("--child", "--child-options", "--child-out", "--child-source"):
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    gpu = torch.cuda.is_available()
    if gpu:
        wanted = [] if args.variants is None else list(dict.fromkeys(args.variants or VARIANTS))
        configs = {"fp16": ["dtype=float16"]}
        configs.update({f"fp16 + {name}": ["dtype=float16", *VARIANTS[name]] for name in wanted})
    else:
        configs = {dt: [f"dtype={dt}"] for dt in args.dtypes}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "bench_step.log"
    device = torch.cuda.get_device_name() if gpu else f"CPU ({platform.processor() or platform.machine()})"
    print(f"bench_step: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.warmup} warm-up + {args.steps} timed step(s) per optimise stage; full size, random weights; "
          f"log: {log}", flush=True)
    given = dict(item.split("=", 1) for item in args.source_run)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()

    def save(rows: list[dict[str, Any]]) -> None:
        # After every recipe too, so that a run stopped part-way keeps what it measured.
        if args.out:
            Path(args.out).write_text(json.dumps({"device": device, "torch": torch.__version__,
                                                  "threads": torch.get_num_threads(), "results": rows}, indent=2))

    for precision, options in configs.items():
        sources: dict[str, Path] = {k: Path(v) for k, v in given.items()}
        for recipe in args.recipes:
            source = None
            if recipe in SOURCES:
                source = sources.get(SOURCES[recipe])
                if source is None:
                    print(f"  {recipe}: skipped (it edits a {SOURCES[recipe]} run: benchmark that recipe too, "
                          f"or pass --source-run {SOURCES[recipe]}=RUN_DIR)")
                    continue
            t0 = time.perf_counter()
            got = run_child(args, recipe, options, source)
            if "error" in got:
                print(f"  {recipe} [{precision}]: FAILED: {got['error']}".splitlines()[0], flush=True)
                results.append({"recipe": recipe, "precision": precision, "error": got["error"]})
                continue
            sources[recipe] = Path(got["run"])
            for row in got["rows"]:
                results.append({"recipe": recipe, "precision": precision, **row})
                print(f"  {recipe:<16} {row['stage']:<16} {precision:<24} step {row['seconds']:7.2f} s, "
                      f"model passes {100 * row['model_passes'] / row['seconds']:3.0f}%, "
                      f"step/passes {row['step_over_passes']:.2f}", flush=True)
            print(f"  {recipe} [{precision}] done in {time.perf_counter() - t0:.0f} s", flush=True)
            save(results)
    total = time.perf_counter() - start
    _ratios(results) if gpu and len(configs) > 1 else None
    print(f"\nShares of the mean step time ({args.steps} timed step(s) per stage; total {total:.0f} s)"
          + ("; (xN) = step time / plain fp16's" if gpu and len(configs) > 1 else "") + ":\n")
    print(table(results))
    save(results)

if __name__ == "__main__":
    main()
