"""One full-size step for each distinct model combination of the recipes, on random weights.

``launch.py --dry-run`` builds the real architectures (headgen/models/full_size.py) and runs the
real recipes on them at their real resolutions: SD 1.5 + CLIP ViT-L/14 + the texture LDM
(DreamFace), SD 1.5 + the face and InstructPix2Pix ControlNets (HeadSculpt editing), SD 2.1-base +
its face ControlNet (HeadArtist). Beyond the dry run's own cuts, these runs skip stages that only
repeat a model combination already covered (steps=0) and keep cheap exporters, so that all three
fit in a few minutes on 2 CPU cores. What they catch that tiny models cannot: channel counts,
cross-attention widths (768 vs 1024), ControlNet conditioning sizes, the VAE's factor and dtypes.
"""

from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from runhelpers import HEADSCULPT_RECIPE, HEADSCULPT_REDUCED
from shared import shared_demo_run

from headgen.cli import main

OBJ_ONLY = "stages.export.exporters=[{type: obj, filename: head.obj}]"


def dry_run(recipe: str, out: Path, *overrides: str) -> tuple[Path, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["--config", recipe, "--dry-run", "--output-dir", str(out), *overrides])
    log = buf.getvalue()
    assert code == 0, log[-3000:]
    return Path(log.strip().splitlines()[-1].removeprefix("Run directory: ")), log


def check(run: Path, log: str, models: dict[str, str], stepped: list[str]) -> dict:
    assert "DRY RUN: full-size models with RANDOM weights" in log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["prior"] == "pretrained"
    assert summary["models"] == dict.fromkeys(models, "pretrained")
    for name, arch in models.items():  # each model came from its full-size random stand-in
        line = rf"^  {name}\s+pretrained: .*/full-size-random/{arch}-[0-9a-f]{{10}}\)$"
        assert re.search(line, log, re.MULTILINE), (name, arch)
    stages = {s["name"]: s for s in summary["stages"]}
    for name in stepped:
        assert stages[name]["steps"] == 1, name
        assert stages[name]["peak_rss_mb"] > 1000, name  # full-size weights are resident
        loss = summary["metrics"].get(f"{name}/final_loss")
        assert loss is not None and math.isfinite(loss), (name, loss)
    return summary


def test_sd15_clip_and_the_texture_ldm(tmp_path):
    run, log = dry_run(
        "methods/dreamface.yaml", tmp_path,
        "stages.coarse.selector.views=[[0, 0]]", "stages.coarse.selector.lights=1",
        "stages.hair.selector.style=short", "stages.hair.selector.colour=black",
        "stages.texture-image.steps=0", OBJ_ONLY)
    check(run, log, {"clip_l14": "clip-vit-l14", "dreamface_texture": "sd15-texture", "sd15": "sd15"},
          ["carve", "texture-latent"])
    config = (run / "config.yaml").read_text()
    assert "dry_run: true" in config and "texture_path: true" in config  # the 5-channel texture UNet ran


def test_sd15_with_the_face_and_ip2p_controlnets(tmp_path, tmp_path_factory):
    # The reduced HeadSculpt run tests/test_headsculpt.py reads too: run once per session.
    source = shared_demo_run(tmp_path_factory, HEADSCULPT_RECIPE, *HEADSCULPT_REDUCED)
    run, log = dry_run("methods/headsculpt-edit.yaml", tmp_path / "edit", f"source={source}", OBJ_ONLY)
    check(run, log, {"controlnet_face": "controlnet-sd15-in-diffusion_sd15", "controlnet_ip2p": "controlnet-sd15",
                     "sd15": "sd15"}, ["edit"])


def test_sd21_base_with_its_face_controlnet(tmp_path):
    run, log = dry_run(
        "methods/headartist.yaml", tmp_path, "stages.texture.steps=0", "stages.refine.steps=0",
        "stages.export.exporters=[{type: preview, turntable_frames: 2}]")
    check(run, log, {"controlnet_face_sd21": "controlnet-sd21", "sd21_base": "sd21-base"},
          ["geometry-latent", "geometry"])


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
