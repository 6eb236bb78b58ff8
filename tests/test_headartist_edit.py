"""HeadArtist editing end to end under the demo prior (reduced): a finished run is edited by text into
a new run directory; the source run is not touched, the SDF stays the source's while the offsets
learn, the texture continues from the source's colour field, and the head moves toward the edited
target (the demo prior's edited target: same identity, the edit's features)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from runhelpers import launch_demo, run_metrics
from safetensors.torch import load_file

SOURCE_RECIPE = "methods/headartist.yaml"
EDIT_RECIPE = "methods/headartist-edit.yaml"
EDIT = "with dark skin"

# A small textured source: grid 32, no geometry steps, a short texture stage, OBJ only.
SOURCE = [
    "stages.init.representation.resolution=32",
    "stages.init.representation.color_encoding.levels=8",
    "stages.init.representation.color_encoding.log2_hashmap_size=14",
    "stages.init.representation.color_encoding.max_resolution=256",
    "stages.init.representation.export_texture_size=128",
    "stages.geometry-latent.steps=0", "stages.geometry.steps=0",
    "stages.geometry.renderer.resolution=64",
    "stages.texture.steps=12", "stages.texture.renderer.resolution=64",
    "stages.texture.guidance.resolution=128", "stages.texture.optimizer.groups.color=6.0e-3",
    "stages.refine.steps=0", "stages.export.exporters=[{type: obj}]",
]
# The edit recipe at the same render sizes, a few steps per stage.
EDIT_REDUCED = [
    "stages.geometry.steps=3", "stages.geometry.renderer.resolution=64",
    "stages.geometry.guidance.resolution=128",
    "stages.texture.steps=16", "stages.texture.renderer.resolution=64",
    "stages.texture.guidance.resolution=128", "stages.texture.optimizer.groups.color=6.0e-3",
    "stages.texture.representation.export_texture_size=128", "stages.export.exporters=[{type: obj}]",
]




def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}




@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    source = launch_demo(SOURCE_RECIPE, tmp_path_factory.mktemp("source"), *SOURCE)
    before = checksums(source)
    edit = launch_demo(EDIT_RECIPE, tmp_path_factory.mktemp("edit"), f"source={source}", f'edit_prompt="{EDIT}"',
                       *EDIT_REDUCED)
    return source, before, edit


def test_source_untouched_and_edit_is_a_new_run(runs):
    source, before, edit = runs
    assert len(before) > 10 and checksums(source) == before
    assert edit != source and not edit.is_relative_to(source)
    summary = json.loads((edit / "summary.json").read_text())
    assert summary["finished"] and summary["prompt"] == "a portrait of an old sailor with a grey beard"
    assert [s["name"] for s in summary["stages"]] == ["source", "geometry", "texture", "export"]
    assert summary["metrics"]["source/source_stage"] == "refine"  # the source's last optimised stage
    assert (edit / "assets" / "head.obj").is_file()
    cfg = (edit / "config.yaml").read_text()
    assert f"edit_prompt: {EDIT}" in cfg and "mode: offsets-only" in cfg


def test_geometry_edit_learns_offsets_with_the_sdf_fixed_then_texture_continues(runs):
    source, _, edit = runs
    src = load_file(str(source / "stages" / "texture" / "result.safetensors"))
    geo = load_file(str(edit / "stages" / "geometry" / "result.safetensors"))
    tex = load_file(str(edit / "stages" / "texture" / "result.safetensors"))
    assert torch.equal(geo["sdf"], src["sdf"]) and not torch.equal(geo["deform"], src["deform"])
    colour = [k for k in src if k.startswith("color_net.")]
    assert colour and all(torch.equal(geo[k], src[k]) for k in colour)  # the geometry edit leaves colour alone
    assert torch.equal(tex["sdf"], geo["sdf"]) and torch.equal(tex["deform"], geo["deform"])
    assert any(not torch.equal(tex[k], geo[k]) for k in colour)  # the source's colour field continued
    meta = json.loads((edit / "stages" / "texture" / "result.json").read_text())
    assert meta["config"]["resolution"] == 32 and meta["config"]["mode"] == "fix-geometry"  # the source's grid


def test_edit_moves_toward_the_edited_target(runs):
    source, _, edit = runs
    m, s = run_metrics(edit), run_metrics(source)
    # The geometry edit keeps the head (the demo's edited target has the source's identity).
    assert abs(m["geometry/geometry_error"] - s["texture/geometry_error"]) < 1e-3, (m, s)
    assert abs(m["geometry/psnr"] - s["texture/psnr"]) < 0.5, (m, s)
    # The texture edit: PSNR to the edited target up, to the original target down. Measured (12-step
    # source, 16 edit steps): edit_psnr 16.58 -> 17.58 dB, psnr 19.74 -> 17.26 dB, i.e. the head went
    # from 3.2 dB closer to the original to 0.3 dB closer to the edited target. (SSD overshoots a target
    # under the exact demo prior, so the absolute gain to the edited target is the smaller figure.)
    assert m["texture/edit_psnr"] > m["geometry/edit_psnr"] + 0.5, m
    assert m["texture/psnr"] < m["geometry/psnr"] - 1.0, m
    assert m["texture/edit_psnr"] - m["texture/psnr"] > m["geometry/edit_psnr"] - m["geometry/psnr"] + 2.0, m
