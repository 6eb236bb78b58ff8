"""prior: auto | pretrained | demo, end to end through launch.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testpaths import REPO

from headgen.cli import main

RECIPE = REPO / "tests" / "recipes" / "demo_texture_fit.yaml"
FAST = ["stages.texture.steps=3", "stages.texture.renderer.resolution=64", "stages.texture.guidance.resolution=64",
        "stages.identity.representation.texture_size=32"]


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_auto_without_weights_uses_demo_prior_loudly(tmp_path, capsys, offline):
    code, out, err = run(["--config", str(RECIPE), "--output-dir", str(tmp_path), "prior=auto", *FAST], capsys)
    assert code == 0, err
    assert "DEMO PRIOR: no local weights for 'sd15'" in out
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prior"] == "demo"
    assert {"texture/psnr", "texture/silhouette_iou", "texture/geometry_error"} <= set(summary["metrics"])


def test_pretrained_without_weights_is_a_clear_error(tmp_path, capsys, offline):
    code, _, err = run(["--config", str(RECIPE), "--output-dir", str(tmp_path), "prior=pretrained", *FAST], capsys)
    assert code == 2
    assert "model 'sd15' = stable-diffusion-v1-5/stable-diffusion-v1-5 is not available locally" in err
    assert "hf download" in err and "Traceback" not in err


def test_auto_with_local_weights_uses_them(tmp_path, capsys, offline, tiny_sd_dir):
    code, out, err = run(["--config", str(RECIPE), "--output-dir", str(tmp_path), "prior=auto", *FAST,
                          f"models.sd15.local_dir={tiny_sd_dir}"], capsys)
    assert code == 0, err
    assert "DEMO PRIOR" not in out
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    assert json.loads((run_dir / "summary.json").read_text())["prior"] == "pretrained"
