"""Scores of a finished run for the bench: CLIP score over the evaluation orbit, and (under the demo
prior) ground truth against the prompt's target.

Evaluation orbit (the same for every method): :data:`EVAL_ORBIT`, 8 views around the head at
elevation 5 degrees, every 45 degrees of azimuth from the front, camera at distance 3 with a
30-degree field of view, textured render (shaded geometry when the result has no texture) on white
under the preview exporter's key light. CLIP score = ``100 * cos(image, text)`` per view, averaged
(:func:`headgen.prior.clip.clip_score`, through transformers' ``CLIPModel`` in
:class:`headgen.prior.clip.PretrainedClip`).

Ground truth under the demo prior (:func:`demo_ground_truth`): ``psnr``, ``silhouette_iou``,
``geometry_error``, ``identity_distance`` exactly as ``summary.json`` records them per stage
(:func:`headgen.prior.demo.metrics.demo_scores`), plus ``landmark_error_px``: the mean pixel distance
between the result's and the target's embedded landmarks projected into the front-orbit views at
``gt_resolution`` px (128 by default, as summary.json; landmarks facing the camera in both), for
results with the head model's topology.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headgen.config.recipe import ModelSpec, validate
from headgen.config.typed import parse
from headgen.context import RunContext
from headgen.errors import HeadgenError
from headgen.rundir import RunDir

EVAL_ORBIT: list[tuple[float, float]] = [(5.0, float(az)) for az in range(0, 360, 45)]
"""(elevation, azimuth) in degrees of the CLIP evaluation views."""
EVAL_DISTANCE, EVAL_FOVY = 3.0, 30.0
GT_SIZE = 128
"""Render size of the ground-truth scores (as summary.json's)."""


# ------------------------------------------------------------------------------- loading a run
def open_run(root: str | Path, device: torch.device) -> tuple[RunContext, Any]:
    """The run's context and its final representation (the last stage that saved a result)."""
    from headgen.stages.results import has_result, load_result

    run_dir = RunDir(root)
    plain = run_dir.read_config()
    cfg = validate(plain)
    ctx = RunContext(cfg, plain, run_dir, device, run_id=run_dir.read_state()["run_id"])
    for name in reversed(list(cfg.stages)):
        if has_result(run_dir.root / "stages" / name):
            return ctx, load_result(run_dir.root / "stages" / name, ctx, ctx.stamp(name))
    raise HeadgenError(f"{root}: no stage saved a result; nothing to score")


def final_surface(representation: Any) -> Any:
    """The surface the exporters write (textured when the result has a texture)."""
    from headgen.export.obj import export_surface

    return export_surface(representation)


def orbit_images(surface: Any, size: int, device: torch.device) -> torch.Tensor:
    """[N, size, size, 3] float renders of ``surface`` over :data:`EVAL_ORBIT`."""
    from headgen.export.preview import orbit_cameras, render_views

    textured = surface.albedo_map is not None or surface.v_color is not None or surface.albedo_fn is not None
    mode = "rgb" if textured else "shading"
    groups: dict[float, list[float]] = {}
    for el, az in EVAL_ORBIT:
        groups.setdefault(el, []).append(az)
    out = []
    for el, azimuths in groups.items():
        cams = orbit_cameras(azimuths, el, EVAL_DISTANCE, EVAL_FOVY, size).to(device)
        out.append(render_views(surface.to(device), cams, mode, size))
    return torch.from_numpy(np.concatenate(out)).float() / 255.0


# ------------------------------------------------------------------------------- CLIP
def model_specs(extra: dict[str, ModelSpec] | None = None) -> dict[str, ModelSpec]:
    """configs/models.yaml's entries, updated with ``extra``."""
    import yaml

    from headgen.config.compose import repo_root

    node = yaml.safe_load((repo_root() / "configs" / "models.yaml").read_text(encoding="utf-8"))["models"]
    specs = {name: parse(ModelSpec, value, path=f"models.{name}") for name, value in node.items()}
    specs.update(extra or {})
    return specs


def clip_available(spec: ModelSpec) -> bool:
    from headgen.models.zoo import is_available

    return spec.kind == "clip" and is_available(spec, ("clip",))


@functools.lru_cache(maxsize=4)
def _pretrained(name: str, spec_json: str, device: str) -> Any:
    from headgen.prior.clip import load_clip

    spec = parse(ModelSpec, json.loads(spec_json), path=f"models.{name}")
    return load_clip({name: spec}, name, device)


def clip_scorer(name: str, spec: ModelSpec, device: torch.device) -> Any:
    """The pretrained CLIP ``name`` (loaded once per process)."""
    from headgen.config.typed import to_plain

    return _pretrained(name, json.dumps(to_plain(spec), sort_keys=True), str(device))


def clip_score_views(model: Any, images: torch.Tensor, text: str) -> float:
    """100 x cosine(view, text), averaged over the views."""
    from headgen.prior.clip import clip_score

    return clip_score(model, images, text)


# ------------------------------------------------------------------------------- demo ground truth
_WORLDS: dict[tuple[str, str, str], Any] = {}


def demo_world(ctx: RunContext) -> Any:
    """The demo prior's world for the run's prompt and head (one per process and prompt)."""
    from headgen.prior.demo.world import DemoSettings, DemoWorld

    key = (json.dumps(ctx.plain_config.get("head"), sort_keys=True), ctx.config.prompt, str(ctx.device))
    if key not in _WORLDS:
        if len(_WORLDS) >= 8:
            _WORLDS.pop(next(iter(_WORLDS)))
        # Only the prompt's own target is needed: no unconditional bank (it costs seconds per world).
        _WORLDS[key] = DemoWorld(ctx.head, ctx.config.prompt, settings=DemoSettings(bank_size=0), device=ctx.device)
    return _WORLDS[key]


def landmark_error_px(vertices: torch.Tensor, world: Any, size: int = GT_SIZE) -> float | None:
    """Mean pixel distance of the embedded landmarks (result vs target) over the front orbit, or None
    when the result does not have the head model's topology."""
    from headgen.prior.demo.metrics import eval_cameras
    from headgen.render.landmarks import facing_camera

    head = world.head
    if vertices.shape[0] != head.v_template.shape[0]:
        return None
    device = world.device
    cams = eval_cameras(size, device)
    ours = head.landmarks(vertices.detach().to(device).float())
    theirs = head.landmarks(world.target.vertices(head).to(device).float())
    px = [_project(p, cams) for p in (ours, theirs)]
    visible = facing_camera(ours[None].expand(cams.batch_size, -1, -1), cams)
    visible &= facing_camera(theirs[None].expand(cams.batch_size, -1, -1), cams)
    if not bool(visible.any()):
        return None
    dist = (px[0] - px[1]).norm(dim=-1)
    return float(dist[visible].mean())


def _project(points: torch.Tensor, cameras: Any) -> torch.Tensor:
    """Continuous pixel coordinates [B, N, 2] (x = column, y = row from the top)."""
    mvp = cameras.mvp().to(points.device)
    homo = torch.cat([points, torch.ones_like(points[:, :1])], dim=-1)
    clip = homo[None] @ mvp.transpose(1, 2)
    ndc = clip[..., :2] / clip[..., 3:4]
    x = (ndc[..., 0] + 1) * 0.5 * cameras.width
    y = (1 - ndc[..., 1]) * 0.5 * cameras.height
    return torch.stack([x, y], dim=-1)


def demo_ground_truth(ctx: RunContext, representation: Any, size: int = GT_SIZE) -> dict[str, float]:
    from headgen.prior.demo.metrics import demo_scores

    world = demo_world(ctx)
    scores = demo_scores(representation, world, size=size)
    render_input = representation.render_input()
    mesh = getattr(render_input, "mesh", None)
    if mesh is not None:
        err = landmark_error_px(mesh.v_pos.detach(), world, size)
        if err is not None:
            scores["landmark_error_px"] = err
    return scores


# ------------------------------------------------------------------------------- one run
def view_metrics(ctx: RunContext, rep: Any, prior: str, device: torch.device) -> dict[str, float]:
    """``janus_faces``, ``front_face`` (any prior) and ``psnr_front/side/back`` (demo) of the final head
    (:mod:`headgen.bench.views`)."""
    from headgen.bench.views import janus_scores, sector_psnr

    surface = final_surface(rep)
    out = janus_scores(surface, device)
    if prior == "demo":
        world = demo_world(ctx)
        out.update(sector_psnr(surface, world.target.surface(world.head, device), device=device))
    return out


def score_run(root: str | Path, *, prior: str, clip_models: list[str], demo_clip: bool,
              models: dict[str, ModelSpec] | None, resolution: int, device: torch.device,
              gt_resolution: int = GT_SIZE) -> tuple[dict, list[str]]:
    """Bench metrics of a finished run, and notes on what was skipped (and why)."""
    ctx, rep = open_run(root, device)
    metrics: dict[str, float] = {}
    notes: list[str] = []
    with torch.no_grad():
        if prior == "demo":
            metrics.update({k: round(v, 5) for k, v in demo_ground_truth(ctx, rep, gt_resolution).items()})
        specs = model_specs(models)
        wanted = [n for n in clip_models if n in specs and clip_available(specs[n])]
        for name in clip_models:
            if name not in specs:
                notes.append(f"clip model '{name}' is not in configs/models.yaml or the bench's models:")
            elif name not in wanted:
                notes.append(f"clip_{name.removeprefix('clip_')} skipped: {specs[name].hub_id} not on disk")
        images = None
        if wanted or (demo_clip and prior == "demo"):
            images = orbit_images(final_surface(rep), resolution, device)
        for name in wanted:
            scorer = clip_scorer(name, specs[name], device)
            score = clip_score_views(scorer, images, ctx.config.prompt)
            metrics[f"clip_{name.removeprefix('clip_')}"] = round(score, 4)
        metrics.update({k: round(v, 4) for k, v in view_metrics(ctx, rep, prior, device).items()})
        if demo_clip and prior == "demo" and images is not None:
            from headgen.prior.demo.clip import DemoClip

            metrics["clip_demo"] = round(clip_score_views(DemoClip(demo_world(ctx)), images, ctx.config.prompt), 4)
    return metrics, notes


__all__ = ["EVAL_ORBIT", "clip_score_views", "demo_ground_truth", "landmark_error_px", "orbit_images",
           "score_run"]
