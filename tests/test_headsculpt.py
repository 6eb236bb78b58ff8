"""HeadSculpt end to end on a reduced recipe under the demo prior (scored against its target), then
IESD editing of that run: the edit scale sweep 0 / 0.5 / 1 on the recipe itself.

One module-scoped run (coarse NeRF 32 px / 30 steps, DMTet grid 32, fine 64 px / 50 steps) serves
every test; the edits start from it. The recipe's hyper-parameters are unchanged apart from sizes
and step counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import pygltflib
import pytest
import torch
import trimesh
from runhelpers import HEADSCULPT_PREVIEW, HEADSCULPT_RECIPE, HEADSCULPT_REDUCED, launch_demo, run_metrics
from shared import shared_demo_run

from headgen.heads import load_builtin_head
from headgen.prior.demo.metrics import eval_cameras, psnr
from headgen.prior.demo.world import DemoWorld, camera_lights
from headgen.render.mesh_renderer import MeshRenderer
from headgen.stages.results import load_result

EDIT_RECIPE = "methods/headsculpt-edit.yaml"
EDIT_PROMPT = "make him older"
PREVIEW = HEADSCULPT_PREVIEW
EDIT_REDUCED = ["stages.edit.steps=25", "stages.edit.renderer.resolution=64",
                "stages.edit.guidance.resolution=128", *PREVIEW]




pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # Run once per session: the full-size edit dry run (tests/full_size) edits the same run.
    return shared_demo_run(tmp_path_factory, HEADSCULPT_RECIPE, *HEADSCULPT_REDUCED)


@pytest.fixture(scope="module")
def edits(run_dir, tmp_path_factory):
    """{edit scale: edit run directory}, each started from the reduced run (its fine DMTet)."""
    root = tmp_path_factory.mktemp("headsculpt-edit")
    return {scale: launch_demo(EDIT_RECIPE, root / str(scale), f"source={run_dir}", f"edit_prompt={EDIT_PROMPT!r}",
                               f"stages.edit.guidance.edit_scale={scale}", *EDIT_REDUCED)
            for scale in (0.0, 0.5, 1.0)}


def test_assets_and_summary(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prior"] == "demo" and summary["finished"]
    assert [s["name"] for s in summary["stages"]] == ["coarse", "convert", "fine", "export"]
    assert [s["steps"] for s in summary["stages"][:3]] == [30, 0, 50]
    assert {"obj", "mtl", "diffuse_map", "glb", "preview", "turntable"} <= set(summary["assets"])
    mesh = trimesh.load(run_dir / "assets/head.obj", process=False)
    assert mesh.visual.uv is not None and len(mesh.faces) > 2000
    assert "map_Kd" in (run_dir / summary["assets"]["mtl"]).read_text()
    assert iio.imread(run_dir / summary["assets"]["diffuse_map"]).shape == (256, 256, 3)
    glb = pygltflib.GLTF2().load(str(run_dir / "assets/head.glb"))
    assert glb.materials[0].pbrMetallicRoughness.baseColorTexture is not None
    preview = iio.imread(run_dir / summary["assets"]["preview"])
    assert preview.shape[0] >= 96 and preview.shape[1] >= 3 * 96
    assert (run_dir / summary["assets"]["turntable"]).stat().st_size > 0
    cfg = (run_dir / "config.yaml").read_text()
    assert "cfg: 101" in cfg and "<back-view>, without eyes, without faces" in cfg
    assert "controlnet_face" in cfg and "weighting: fantasia3d" in cfg


def test_coarse_nerf_is_head_shaped(run_dir):
    m = run_metrics(run_dir)
    # The NeRF is scored through its density-5 surface. Measured: IoU 0.936, PSNR 14.55 dB, geometry error
    # 0.0216 (14.81 / 0.0213 before the rasterizer's per-vertex projection; exact-view demo prior with
    # the block autoencoder: 0.943 / 16.93 / 0.0204; the head prior
    # alone: 0.945 / 16.33 / 0.021; a grey head of the target's own shape 18.1 dB).
    # On an AMD EPYC (AVX512, 2026-12-03) the same run gives 0.938 / 14.55 dB / 0.0211 (the fine stage
    # then 18.72 dB): 30 CFG-101 steps on the colour amplify the CPU's last floating-point bits, so the
    # colour's PSNR is only checked to stay near the head prior's; the shape is what this test is about.
    assert m["coarse/silhouette_iou"] > 0.93, m
    assert m["coarse/geometry_error"] < 0.023, m
    assert m["coarse/psnr"] > 14.0, m


def test_conversion_keeps_the_coarse_head(run_dir):
    m = run_metrics(run_dir)
    # Measured: IoU 0.933, PSNR 14.53 dB (coarse 0.936 / 14.55; exact-view prior 0.939 / 16.83 from 0.943 / 16.93).
    assert abs(m["convert/silhouette_iou"] - m["coarse/silhouette_iou"]) < 0.015, m
    assert abs(m["convert/psnr"] - m["coarse/psnr"]) < 0.6, m


def test_fine_stage_improves_on_the_coarse_head(run_dir):
    m = run_metrics(run_dir)
    # Measured (50 steps at 64 px): PSNR 14.53 -> 18.51 dB, IoU 0.933 -> 0.945, geometry error 0.0216 -> 0.0209
    # (exact-view prior: 16.83 -> 18.7, 0.939 -> 0.952, 0.0203 -> 0.0199).
    # The template-shaped head with the target's exact albedo would score 20.2 dB / 0.947. With the bank
    # (unconditional branch) on grid cells only (issue 18's speed-up): IoU 0.933 -> 0.9448, coarse 14.55 dB.
    assert m["fine/psnr"] > m["convert/psnr"] + 1.0, m
    assert m["fine/psnr"] > m["coarse/psnr"] + 1.0, m
    assert m["fine/silhouette_iou"] > max(m["convert/silhouette_iou"] + 0.005, 0.94), m
    assert m["fine/geometry_error"] < m["convert/geometry_error"] + 0.001, m
    assert m["export/psnr"] == m["fine/psnr"]


# ---------------------------------------------------------------------------------------- editing
@torch.no_grad()
def renders(run: Path, stage: str, world: DemoWorld) -> torch.Tensor:
    """The stage's result at the demo metrics' views, [V,H,W,3] (white background)."""
    ctx = SimpleNamespace(head=world.head, device=torch.device("cpu"), config=SimpleNamespace(head={}), state={})
    surface = load_result(run / "stages" / stage, ctx, None).render_input()
    return render_surface(surface, world)


def render_surface(surface, world: DemoWorld) -> torch.Tensor:
    cams = eval_cameras(128, torch.device("cpu"))
    renderer = MeshRenderer(MeshRenderer.Config(resolution=128, background="white"))
    return renderer.render(surface, cams, camera_lights(cams, 1)[0], modes=("rgb",))["rgb"]


def test_edit_scale_sweep_on_the_recipe(run_dir, edits):
    source = run_metrics(run_dir)
    scores = {s: run_metrics(run) for s, run in edits.items()}
    edit_psnr = [scores[s]["edit/edit_psnr"] for s in (0.0, 0.5, 1.0)]
    identity_psnr = [scores[s]["edit/psnr"] for s in (0.0, 0.5, 1.0)]
    # Measured: edited-target PSNR 14.8 / 19.1 / 21.1 dB, source-target PSNR 18.5 / 17.6 / 15.5 dB
    # (exact-view demo prior, block autoencoder: 15.5 / 18.8 / 21.5 and 20.1 / 18.3 / 16.2).
    assert edit_psnr[0] + 1.0 < edit_psnr[1] < edit_psnr[2] - 1.0, scores
    assert identity_psnr[0] > identity_psnr[1] > identity_psnr[2], scores
    for s in (0.0, 0.5, 1.0):  # the identity's shape is kept: the edit changes what the head looks like
        assert abs(scores[s]["edit/geometry_error"] - source["fine/geometry_error"]) < 0.002, scores[s]
        assert scores[s]["edit/silhouette_iou"] > 0.94, scores[s]
    summary = json.loads((edits[0.5] / "summary.json").read_text())
    assert summary["prompt"] == "a head of Saul Goodman"  # the source run's prompt
    assert summary["metrics"]["source/source_stage"] == "fine"


def test_edit_changes_the_edited_region_and_keeps_the_rest(run_dir, edits):
    """Per region of the demo targets: where the instruction changes the target (hair, skin with age), the
    head moves from the source target to the edited one as the edit scale grows; where it does not, the
    head stays at least as close to the source target as before the edit."""
    world = DemoWorld(load_builtin_head(), "a head of Saul Goodman")
    source = render_surface(world.target.surface(world.head), world)
    edited = render_surface(world.target_for(world.prompt, EDIT_PROMPT).surface(world.head), world)
    diff = (source - edited).abs().amax(-1)
    kept, changed = (diff < 0.05) & (source < 0.99).any(-1), diff > 0.1
    assert kept.float().mean() > 0.1 and changed.float().mean() > 0.05
    before = renders(run_dir, "fine", world)
    after = {s: renders(run, "edit", world) for s, run in edits.items()}
    to_edit = [psnr(after[s][changed], edited[changed]) for s in (0.0, 0.5, 1.0)]
    to_source = [psnr(after[s][changed], source[changed]) for s in (0.0, 0.5, 1.0)]
    # Measured: edited region vs the edited target 6.9 / 10.5 / 15.7 dB (6.5 before the edit), vs the
    # source target 13.8 / 11.0 / 7.9 (13.9 before); kept region vs the source target 13.5 before the edit,
    # 16.2 / 16.3 / 16.0 after (the edit stage keeps refining what both scores agree on).
    assert to_edit[0] + 2.0 < to_edit[1] < to_edit[2] - 2.0, to_edit
    assert to_source[0] > to_source[1] + 1.0 > to_source[2] + 2.0, to_source
    assert to_edit[1] > psnr(before[changed], edited[changed]) + 2.0
    kept_before = psnr(before[kept], source[kept])
    for s in (0.0, 0.5, 1.0):
        assert psnr(after[s][kept], source[kept]) > kept_before - 0.5, s
    # summary.json carries the same region scores (edit_kept_psnr / edit_changed_psnr), the load stage
    # included: the edit's starting point.
    for i, s in enumerate((0.0, 0.5, 1.0)):
        m = run_metrics(edits[s])
        assert m["edit/edit_changed_psnr"] == pytest.approx(to_edit[i], abs=0.01), m
        assert m["edit/edit_kept_psnr"] == pytest.approx(psnr(after[s][kept], source[kept]), abs=0.01), m
        assert m["source/edit_kept_psnr"] == pytest.approx(kept_before, abs=0.01), m
