"""DreamFace end to end on a reduced recipe under the demo prior (scored against its target)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import pygltflib
import pytest
import torch
import trimesh
from shared import shared_demo_run

from headgen.cli import main

RECIPE = "methods/dreamface.yaml"

# The procedural head (the recipe's default is ICT-FaceKit, tested below): fast, and the figures these
# tests check were measured on it.
BUILTIN = ["head=builtin", "stages.coarse.representation.num_identity=50"]
REDUCED = [
    *BUILTIN, "stages.coarse.selector.pool_size=128", "stages.coarse.selector.resolution=64",
    "stages.carve.steps=30", "stages.carve.renderer.resolution=128", "stages.carve.guidance.resolution=128",
    "stages.hair.selector.resolution=64", "stages.hair.selector.lights=2",
    "stages.texture-latent.steps=60", "stages.texture-image.steps=60",
    "stages.texture-image.renderer.resolution=128", "stages.texture-image.guidance.resolution=128",
    "stages.export.exporters.2.turntable_frames=6", "stages.export.exporters.2.resolution=128",
    "stages.export.exporters.3.frames=6", "stages.export.exporters.3.resolution=128",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # Run once per session: tests/test_dreamface_texture_edit.py edits the same run.
    return shared_demo_run(tmp_path_factory, RECIPE, *REDUCED)


def test_assets_and_summary(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prior"] == "demo"
    expected = {"obj", "mtl", "diffuse_map", "normal_map", "specular_map", "glb", "preview", "turntable", "animation"}
    assert expected <= set(summary["assets"])
    assert [s["name"] for s in summary["stages"]] == ["coarse", "carve", "hair", "texture-latent", "texture-image",
                                                      "pbr", "export"]
    assert all(s["seconds"] > 0 for s in summary["stages"][:5])
    mesh = trimesh.load(run_dir / "assets/head.obj", process=False)
    assert mesh.visual.uv is not None
    glb = pygltflib.GLTF2().load(str(run_dir / "assets/head.glb"))
    prim = glb.meshes[0].primitives[0]
    assert len(prim.targets) == len(glb.meshes[0].extras["targetNames"]) >= 20
    assert "jawOpen" in glb.meshes[0].extras["targetNames"]
    material = glb.materials[0]
    assert material.pbrMetallicRoughness.baseColorTexture is not None and material.normalTexture is not None
    # The demo prior's smooth autoencoder leaves no 8x8 blocks in the painted map (issue 16; with the
    # former block autoencoder every colour change sat on a block edge: ratio about 5e9).
    from headgen.bench.block_edges import block_edge_ratio

    diffuse = torch.from_numpy(iio.imread(run_dir / summary["assets"]["diffuse_map"])).float().movedim(-1, 0)
    assert max(block_edge_ratio(diffuse)) < 1.5, block_edge_ratio(diffuse)
    # The demo target of "an old sailor with a grey beard" has short grey hair (headgen/prior/demo/targets.py).
    # The colour is clear (grey 0.991, next 0.976). The style is a near tie between the short cut and the
    # bun, whose renders on the carved head differ little: short 0.9901 / bun 0.9911 on an AMD EPYC
    # (AVX512, 2026-12-03), short ahead on the machines before. So: the selector takes its best-scoring
    # style, and the target's own style scores within 0.002 of it, clear of the others (<= 0.93).
    m = summary["metrics"]
    styles = {k.removeprefix("hair/style_score/"): v for k, v in m.items() if k.startswith("hair/style_score/")}
    assert m["hair/hair_colour"] == "grey" and m["hair/hair_style"] == max(styles, key=styles.get)
    assert styles["short"] > max(styles.values()) - 0.002
    assert all(v < styles["short"] - 0.05 for k, v in styles.items() if k not in ("short", "bun")), styles
    assert {"hair_obj", "hair_mtl"} <= set(summary["assets"])
    assert [m.name for m in glb.meshes] == ["head", "hair"]
    assert glb.materials[1].pbrMetallicRoughness.baseColorFactor[:3] == pytest.approx([0.66, 0.66, 0.66], abs=1e-6)
    assert json.loads((run_dir / "stages/hair/hair.json").read_text())["style"] == m["hair/hair_style"]


def test_demo_prior_scores(run_dir):
    m = json.loads((run_dir / "summary.json").read_text())["metrics"]
    # Measured 22.0-22.3 dB on the machines this was tuned on, 21.90 on an AMD EPYC (AVX512, 2026-12-03):
    # the last bits of floating point differ between CPUs and 60 CFG steps amplify them. Under the
    # camera-ambiguous demo prior (the default since issue 16): 21.87 (carve 21.10, coarse 21.03).
    assert m["texture-image/psnr"] > 21.5, m
    assert m["texture-image/psnr"] > m["carve/psnr"]
    assert m["carve/geometry_error"] <= m["coarse/geometry_error"], m
    # The selected identity against candidates drawn at random from the same pool, measured where CLIP
    # can see it: the head's surface. Measured (pool 128, 64 px): 0.0198 vs 0.0270 (pool 2048: 0.0173).
    # In coefficient space the selection is no better than random (10.6 vs 8.8): the 50 coefficients
    # weigh low-variance modes that barely change the renders as much as the ones that do.
    assert m["coarse/geometry_error"] < 0.85 * m["coarse/random_candidate_geometry_error"], m
    assert m["pbr/specular_source"].startswith("analytic stand-in")


def test_ict_facekit_head_shows_eyes_and_teeth_and_exports_its_parts(tmp_path, capsys):
    """The shipped ICT-FaceKit (issue 18): eyes drawn, teeth behind an opened jaw, parts exported."""
    from gltf_validator import validate_glb

    from headgen.bench.face_parts import face_part_figures
    from headgen.bench.metrics import open_run

    tiny = [o.replace("=30", "=5").replace("=60", "=5") for o in REDUCED if o not in BUILTIN]
    code = main(["--config", "methods/dreamface.yaml", "--output-dir", str(tmp_path), "prior=demo",
                 "stages.coarse.selector.pool_size=16",
                 "stages.coarse.selector.cache_dir=" + str(tmp_path / "pool-cache"),
                 "stages.hair.selector.cache_dir=" + str(tmp_path / "hair-cache"), *tiny])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    glb = pygltflib.GLTF2().load(str(run / "assets/head.glb"))
    meshes = {m.name: m for m in glb.meshes}
    parts = {"teeth", "gums_tongue", "eyeball_left", "eyeball_right", "cornea_left", "cornea_right", "eyelashes",
             "lacrimal_fluid", "eye_blend", "eye_occlusion"}
    assert parts <= set(meshes) and len(meshes["head"].extras["targetNames"]) == 57
    assert meshes["teeth"].extras["targetNames"] == meshes["head"].extras["targetNames"]
    assert all((run / "assets" / f"{p}.obj").is_file() for p in parts)
    report = validate_glb(run / "assets/head.glb")
    if report is not None:  # None: node or the validator is not available here
        assert report["errors"] == 0, report
    _, rep = open_run(run, torch.device("cpu"))
    figures = face_part_figures(rep, size=256)
    # Measured on this reduced run at 256 px: 37 / 47 iris / sclera pixels per eye, mouth change 0.077,
    # 30 teeth pixels, one face and two eyes found by OpenCV's cascades (the default run at 384 px:
    # 76 / ~100, 0.106, 63, one face, two eyes: python -m headgen.bench.face_parts RUN_DIR).
    for eye in ("left_eye", "right_eye"):
        assert figures[eye]["iris_px"] > 10 and figures[eye]["sclera_px"] > 10, figures
    assert figures["jaw_open"]["mouth_change"] > 0.03 and figures["jaw_open"]["teeth_px"] > 5, figures
    assert figures["faces"] >= 1, figures

    # Issue 22: a Live Link Face take (2 s: the jaw opens and closes, then a smile) drives the head.
    from dataclasses import replace

    import imageio.v3 as iio
    import numpy as np
    from takes import jaw_then_smile

    from headgen.animation.livelink import write_live_link_csv
    from headgen.bench.face_parts import mouth_box
    from headgen.export.animation import AnimationExporter
    from headgen.export.preview import orbit_cameras

    before = {p: p.read_bytes() for p in (run / "assets").glob("*") if p.is_file()}
    take = write_live_link_csv(tmp_path / "jaw-smile.csv", jaw_then_smile())
    assert main(["--animate", str(run), "--performance", str(take)]) == 0
    out, err = capsys.readouterr()
    folder = run / "assets/performance-jaw-smile"
    assert f"Animation: {folder}" in out and out.count("no head expression for tongueOut") == 1, out
    assert before == {p: p.read_bytes() for p in (run / "assets").glob("*") if p.is_file()}  # the rest untouched
    glb = pygltflib.GLTF2().load(str(folder / "head.glb"))
    (anim,) = glb.animations
    times = glb.accessors[anim.samplers[0].input]
    assert times.count == 60 and times.max[0] == pytest.approx(59 / 30, abs=1e-5)  # 60 frames, 30 fps timecode
    assert {glb.nodes[c.target.node].name for c in anim.channels} >= {"head", "teeth", "gums_tongue"}
    report = validate_glb(folder / "head.glb")
    if report is not None:
        assert report["errors"] == 0, report
    video = iio.imread(folder / "animation.mp4").astype(float)
    cfg = replace(AnimationExporter.Config(), resolution=video.shape[1])  # the reduced run's 128 px
    assert len(video) == round(59 / 30 * cfg.fps) + 1  # the take's duration at the recipe's video rate
    cams = orbit_cameras([cfg.azimuth], cfg.elevation, cfg.distance, cfg.fovy, cfg.resolution)
    x0, y0, x1, y1 = mouth_box(rep, cams, cfg.resolution)
    jaw, smile = round(0.5 * cfg.fps), round(1.5 * cfg.fps)  # the jaw's and the smile's peaks
    change = {k: np.abs(video[i, y0:y1, x0:x1] - video[0, y0:y1, x0:x1]).mean() for k, i in
              (("jaw", jaw), ("smile", smile))}
    outside = np.abs(video[jaw, : y0 // 2] - video[0, : y0 // 2]).mean()  # the top of the frame
    assert change["jaw"] > 5 and change["smile"] > 2 and outside < 1, (change, outside)
