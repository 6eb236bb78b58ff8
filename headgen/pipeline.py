"""Running a recipe: stages in order, progress in ``state.json``, results in the run directory."""

from __future__ import annotations

import copy
import datetime as _dt
import resource
import time
from pathlib import Path
from typing import Any

import torch

from headgen import __version__
from headgen.config.compose import compose
from headgen.config.recipe import RunConfig, validate
from headgen.config.resume import apply_resume_overrides
from headgen.config.typed import to_plain
from headgen.context import RunContext
from headgen.errors import HeadgenError, ResumeError
from headgen.memory import PeakMemory
from headgen.prior import choose_prior, switch_off_missing
from headgen.rundir import RunDir, new_run_id
from headgen.stages.results import has_result, load_result

DONE, PENDING, RUNNING = "done", "pending", "running"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise HeadgenError(f"--device {name}: not a device name (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HeadgenError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HeadgenError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif device.type != "cpu":
        raise HeadgenError(f"--device {name}: unsupported device type (use auto, cpu, cuda or cuda:N)")
    return device


def load_recipe(recipe: str | Path, overrides: list[str]) -> tuple[RunConfig, dict[str, Any]]:
    """Compose and validate; returns the typed config and its complete plain form (defaults filled)."""
    plain = compose(recipe, overrides)
    if plain.get("source") and not str(plain.get("prompt") or "").strip():
        # Editing recipes describe the head by the source run's prompt unless told otherwise.
        plain["prompt"] = RunDir.open(plain["source"], "source").read_config().get("prompt", "")
    cfg = validate(plain)
    return cfg, to_plain(cfg)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    out = {"cpu_rss": round(rss, 1)}
    if device.type == "cuda":
        out["gpu_allocated"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _new_state(cfg: RunConfig) -> dict[str, Any]:
    return {
        "order": list(cfg.stages),
        "stages": {name: {"status": PENDING, "kind": comp.type, "seconds": 0.0} for name, comp in cfg.stages.items()},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "run_id": new_run_id(),
    }


def start_run(
    recipe: str | Path, overrides: list[str], *, verbose: bool = False, log: Any = print, live_viewer: Any = None
) -> Path:
    """Run a recipe in a new run directory; ``live_viewer`` (:class:`headgen.viewer.live.LiveViewer`)
    is fed by every optimise stage."""
    cfg, plain = load_recipe(recipe, overrides)
    device = resolve_device(cfg.device)
    run_dir = RunDir.create(cfg.output_dir, cfg.name, cfg.prompt or cfg.name)
    log(f"headgen {__version__}: {cfg.name} on {device}, seed {cfg.seed}; run directory {run_dir.root}")
    # Parts that need a missing optional model are switched off before config.yaml is written, so
    # the file says what ran and --resume/--export rebuild the same parts.
    cfg, switched = switch_off_missing(cfg, log)
    if switched:
        plain = to_plain(cfg)
    run_dir.write_config(plain)
    state = _new_state(cfg)
    run_dir.write_state(state)
    ctx = RunContext(cfg, plain, run_dir, device, verbose=verbose, run_id=state["run_id"], live_viewer=live_viewer)
    ctx.chosen_prior = choose_prior(cfg, log, {"switched_off": switched})
    with run_dir.lock("config"):
        _execute(ctx, state, log=log)
    return run_dir.root


def resume_run(
    path: str | Path, overrides: list[str] | None = None, *, device: str | None = None, verbose: bool = False,
    log: Any = print, live_viewer: Any = None,
) -> Path:
    """Continue an interrupted run; ``overrides`` change settings of its unfinished stages
    (:mod:`headgen.config.resume`), and config.yaml records them."""
    run_dir = RunDir.open(path, "resume")
    with run_dir.lock("resume"):
        cfg, plain, state = open_run(run_dir, "resume")
        order = state["order"]
        pending = [n for n in order if state["stages"][n]["status"] != DONE]
        if not pending:
            if overrides:
                raise ResumeError(f"--resume {path}: every stage is done, so the overrides would change nothing")
            log(f"--resume {path}: every stage is already done; nothing to do")
            return run_dir.root
        first = pending[0]
        ckpt = cfg.stages[first].build(first).can_resume_from(run_dir.root / "stages" / first)
        done = [n for n in order if state["stages"][n]["status"] == DONE]
        if not done and ckpt is None:
            raise ResumeError(
                f"--resume {path}: the run holds no checkpoint (no finished stage, and stage '{first}' "
                "wrote no last.ckpt); start a new run instead"
            )
        if overrides:
            cfg, plain = _override(run_dir, state, plain, overrides, done, first if ckpt else None, log)
        ctx = RunContext(cfg, plain, run_dir, resolve_device(device or cfg.device), verbose=verbose,
                         run_id=state["run_id"], live_viewer=live_viewer)
        ctx.chosen_prior = choose_prior(cfg, log, recorded=run_dir.read_summary())
        _load_latest_result(ctx, done)
        log(f"resuming {cfg.name} at stage '{first}'" + (f" from {ckpt.relative_to(run_dir.root)}" if ckpt else ""))
        _execute(ctx, state, log=log, resume={first: ckpt})
    return run_dir.root


def _override(
    run_dir: RunDir, state: dict[str, Any], plain: dict[str, Any], overrides: list[str], done: list[str],
    checkpointed: str | None, log: Any,
) -> tuple[RunConfig, dict[str, Any]]:
    """Apply ``--resume`` overrides, validate, and record them in config.yaml and state.json."""
    new_plain, changed = apply_resume_overrides(plain, overrides, done, checkpointed)
    cfg = validate(copy.deepcopy(new_plain))
    new_plain = to_plain(cfg)
    if changed:
        run_dir.write_config(new_plain)
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        state.setdefault("overrides", []).append({"at": stamp, "changed": list(overrides)})
        run_dir.write_state(state)
        log(f"config.yaml updated: {', '.join(changed)}")
    return cfg, new_plain


def export_run(path: str | Path, *, device: str | None = None, verbose: bool = False, log: Any = print) -> Path:
    run_dir = RunDir.open(path, "export")
    cfg, plain, state = open_run(run_dir, "export")
    exports = [n for n, c in cfg.stages.items() if c.type == "export"]
    if not exports:
        raise ResumeError(f"--export {path}: the recipe has no export stage")
    names = list(cfg.stages)
    before = [n for n in names if n not in exports and names.index(n) < names.index(exports[-1])]
    unfinished = [n for n in before if state["stages"][n]["status"] != DONE]
    if unfinished:
        raise ResumeError(
            f"--export {path}: stage '{unfinished[0]}' is not finished; run --resume {path} first"
        )
    ctx = RunContext(cfg, plain, run_dir, resolve_device(device or cfg.device), verbose=verbose, run_id=state["run_id"])
    ctx.assets.update(run_dir.read_summary().get("assets", {}))
    ctx.chosen_prior = choose_prior(cfg, log, recorded=run_dir.read_summary())
    ctx.metrics.update(run_dir.read_summary().get("metrics", {}))
    _load_latest_result(ctx, before)
    for name in exports:
        state["stages"][name]["status"] = PENDING
    with run_dir.lock("export"):
        _execute(ctx, state, log=log)
    return run_dir.root


def animate_run(path: str | Path, performance: str | Path, *, timecode_fps: float | None = None,
                device: str | None = None, verbose: bool = False, log: Any = print) -> Path:
    """Drive a finished run's head with a Live Link Face take: ``assets/performance-<take>/`` gets
    head.glb (the take as its animation clip) and animation.mp4 (the take played at the recipe's
    video settings). Nothing else in the run changes. Returns that folder."""
    from dataclasses import replace

    from headgen.animation.livelink import read_live_link_csv
    from headgen.export.animation import AnimationExporter
    from headgen.export.gltf import GlbExporter
    from headgen.rundir import check_inside

    performance = Path(performance)
    take = read_live_link_csv(performance, timecode_fps)  # a bad take fails before anything is loaded
    run_dir = RunDir.open(path, "animate")
    cfg, plain, state = open_run(run_dir, "animate")
    names = list(cfg.stages)
    exports = [n for n, c in cfg.stages.items() if c.type == "export"]
    before = [n for n in names if n not in exports]
    unfinished = [n for n in before if state["stages"][n]["status"] != DONE]
    if unfinished:
        raise ResumeError(f"--animate {path}: stage '{unfinished[0]}' is not finished; run --resume {path} first")
    configs = {c.type: c.config for n in exports for c in cfg.stages[n].config.exporters}
    glb = replace(configs.get("glb", GlbExporter.Config()), filename="head.glb", animation=str(performance),
                  timecode_fps=take.fps)
    video = replace(configs.get("animation", AnimationExporter.Config()), filename="animation.mp4", sequence=None,
                    performance=str(performance), timecode_fps=take.fps)
    folder = f"performance-{performance.stem}"
    check_inside(folder, "--animate: the take's name")
    ctx = RunContext(cfg, plain, run_dir, resolve_device(device or cfg.device), verbose=verbose, run_id=state["run_id"])
    _load_latest_result(ctx, before)
    out = run_dir.assets / folder
    out.mkdir(parents=True, exist_ok=True)
    rep = ctx.state["representation"]
    log(f"animating {run_dir.root.name} with {performance} ({len(take.times)} frames, {take.duration:.2f} s at a "
        f"{take.fps:g} fps timecode)")
    with torch.no_grad():
        GlbExporter(glb).export(rep, ctx, out)
        AnimationExporter(video).export(rep, ctx, out)
    return out


def open_run(run_dir: RunDir, purpose: str) -> tuple[RunConfig, dict[str, Any], dict[str, Any]]:
    """(typed config, plain config, state) of a run directory, checked against each other."""
    plain = run_dir.read_config()
    try:
        cfg = validate(copy.deepcopy(plain))
    except HeadgenError as exc:
        raise type(exc)(f"--{purpose} {run_dir.root}: its config.yaml is not a valid recipe: {exc}") from exc
    state = run_dir.read_state()
    kinds = [(n, c.type) for n, c in cfg.stages.items()]
    recorded = [(n, state["stages"][n]["kind"]) for n in state["order"]]
    if kinds != recorded:
        raise ResumeError(
            f"--{purpose} {run_dir.root}: state.json does not match config.yaml (stages {recorded} vs {kinds})"
        )
    return cfg, plain, state


def _load_latest_result(ctx: RunContext, done: list[str]) -> None:
    """The state the finished stages left: a finished ``load`` stage is run again (it only reads its
    source run, and restores the frozen source head editing guidance renders), then the result of the
    last finished stage that saves one; a missing result is an error, never a silent fall back to an
    earlier stage's."""
    for name in done:
        if ctx.config.stages[name].type == "load":
            ctx.config.stages[name].build(name).run(ctx)
    for name in reversed(done):
        kind = ctx.config.stages[name].type
        if kind == "export":
            continue
        if kind == "load":
            return
        stage_dir = ctx.run_dir.root / "stages" / name
        if not has_result(stage_dir):
            raise ResumeError(
                f"{ctx.run_dir.root}: stage '{name}' is finished but its result (stages/{name}/result.safetensors "
                "and result.json) is missing; restore it, or start a new run"
            )
        ctx.state["representation"] = load_result(stage_dir, ctx, ctx.stamp(name))
        return


def _execute(ctx: RunContext, state: dict[str, Any], *, log: Any, resume: dict[str, Path | None] | None = None) -> None:
    resume = resume or {}
    summary = ctx.run_dir.read_summary()
    ctx.metrics = {**summary.get("metrics", {}), **ctx.metrics}
    ctx.assets = {**summary.get("assets", {}), **ctx.assets}
    for name, comp in ctx.config.stages.items():
        entry = state["stages"][name]
        if entry["status"] == DONE:
            continue
        stage = comp.build(name)
        ctx.current_stage = name
        entry["status"] = RUNNING
        ctx.run_dir.write_state(state)
        log(f"stage {name} ({comp.type}{f', {stage.steps} steps' if stage.steps else ''})")
        t0 = time.perf_counter()
        memory = PeakMemory(ctx.device)
        try:
            with memory:
                stage.run(ctx, resume.get(name))
        except Exception as exc:
            if not hasattr(exc, "headgen_stage"):
                exc.headgen_stage = name  # type: ignore[attr-defined] # the command line names it
            raise
        finally:
            entry["seconds"] = round(entry.get("seconds", 0.0) + time.perf_counter() - t0, 3)
            entry["peak_rss_mb"] = round(max(_number(entry.get("peak_rss_mb")), memory.rss_mb), 1)
            if memory.gpu_mb is not None:
                entry["peak_gpu_mb"] = round(max(_number(entry.get("peak_gpu_mb")), memory.gpu_mb), 1)
            ctx.run_dir.write_state(state)
        _score(ctx, name)
        if name == _final_stage(ctx):
            _view_scores(ctx)
        entry["status"] = DONE
        entry["steps"] = stage.steps
        ctx.run_dir.write_state(state)
        _write_summary(ctx, state)
    _write_summary(ctx, state)


def _number(value: Any) -> float:
    """A recorded figure, or 0 when state.json holds none (or something else) there."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _score(ctx: RunContext, stage: str) -> None:
    """Under the demo prior the target is known: record ground-truth scores after each stage."""
    world = ctx.state.get("demo_world")
    rep = ctx.state.get("representation")
    if world is None and rep is not None and ctx.prior.demo:
        # A stage that builds no prior (e.g. an edit's `load`) is still scored: it is the edit's start.
        from headgen.prior.demo.world import DemoWorld

        world = DemoWorld.for_run(ctx)
    if world is None or rep is None:
        return
    from headgen.prior.demo.metrics import demo_scores, edit_region_scores

    for key, value in demo_scores(rep, world).items():
        ctx.metrics[f"{stage}/{key}"] = round(value, 5)
    if ctx.config.edit_prompt:  # editing: also score against the edited target
        edited = world.target_for(ctx.config.prompt, ctx.config.edit_prompt)
        for key, value in demo_scores(rep, world, target=edited).items():
            ctx.metrics[f"{stage}/edit_{key}"] = round(value, 5)
        source = world.target_for(ctx.config.prompt)
        for key, value in edit_region_scores(rep, world, source, edited).items():
            ctx.metrics[f"{stage}/edit_{key}"] = round(value, 5)


def _final_stage(ctx: RunContext) -> str | None:
    """The last stage that makes or changes the head (exports only write it out)."""
    names = [n for n, c in ctx.config.stages.items() if c.type != "export"]
    return names[-1] if names else None


def _view_scores(ctx: RunContext) -> None:
    """View consistency of the finished head (:mod:`headgen.bench.views`): the face detector's
    ``views/janus_faces`` and ``views/front_face`` for any prior, and under the demo prior the
    PSNR per azimuth sector against the target."""
    from headgen.geometry.mesh import SurfaceGeometry

    rep = ctx.state.get("representation")
    surface = rep.render_input() if rep is not None else None
    if not isinstance(surface, SurfaceGeometry):
        return
    from headgen.bench.views import janus_scores, sector_psnr

    try:
        scores = janus_scores(surface, ctx.device)
    except HeadgenError as exc:
        # A metric must not cost the finished head: say so in the log and in summary.json instead.
        ctx.log(f"warning: views/janus_faces and views/front_face not measured: {exc}")
        ctx.metrics["views/face_detector"] = f"unavailable: {exc}"
        scores = {}
    world = ctx.state.get("demo_world")
    if world is not None:
        target = world.target_for(ctx.config.prompt, ctx.config.edit_prompt or None)
        scores.update(sector_psnr(surface, target.surface(world.head, ctx.device), device=ctx.device))
        scores.update({f"demo_{k}": v for k, v in world.cells.stats().items()})
    for key, value in scores.items():
        ctx.metrics[f"views/{key}"] = round(float(value), 4)


def _write_summary(ctx: RunContext, state: dict[str, Any]) -> None:
    cfg = ctx.config
    stages = [
        {"name": n, "kind": state["stages"][n]["kind"], "status": state["stages"][n]["status"],
         "steps": state["stages"][n].get("steps", 0), "seconds": state["stages"][n].get("seconds", 0.0),
         **{k: state["stages"][n][k] for k in ("peak_rss_mb", "peak_gpu_mb") if k in state["stages"][n]}}
        for n in state["order"]
    ]
    summary = {
        "method": cfg.name,
        "prompt": cfg.prompt,
        "seed": cfg.seed,
        "prior": ctx.prior.mode,
        "models": dict(sorted(ctx.prior.models.items())),
        "switched_off": dict(ctx.prior.switched_off),
        "device": str(ctx.device),
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages), 3),
        "peak_memory_mb": peak_memory_mb(ctx.device),
        "assets": dict(sorted(ctx.assets.items())),
        "metrics": ctx.metrics,
        "finished": all(s["status"] == DONE for s in stages),
        "headgen_version": __version__,
    }
    ctx.run_dir.write_summary(summary)
