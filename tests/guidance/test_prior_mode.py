"""prior: auto | pretrained | demo, end to end through launch.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runhelpers import DREAMFACE_TINY
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
    from huggingface_hub import constants  # its cache path was fixed when it was first imported

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


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


def test_dreamface_without_its_texture_model_runs_pretrained_with_the_texture_path_off(
    tmp_path, capsys, offline, tiny_sd_dir
):
    from headgen.models.random_init import save_random_clip

    clip = save_random_clip(tmp_path / "tiny-clip")
    code, out, err = run(["--config", "methods/dreamface.yaml", "--output-dir", str(tmp_path / "out"), "prior=auto",
                          f"models.sd15.local_dir={tiny_sd_dir}", f"models.clip_l14.local_dir={clip}",
                          f"stages.coarse.selector.cache_dir={tmp_path / 'pool'}",
                          f"stages.hair.selector.cache_dir={tmp_path / 'hair'}", *DREAMFACE_TINY], capsys)
    assert code == 0, err[-3000:]
    assert "DEMO PRIOR" not in out
    assert "NOTICE: optional model 'dreamface_texture' (dreamface/texture-ldm-unreleased) is not on disk" in out
    assert "stages.texture-latent.guidance: texture path off" in out
    assert "stages.texture-image.guidance: texture path off" in out
    # Per model, what the run uses.
    assert f"sd15               pretrained: stable-diffusion-v1-5/stable-diffusion-v1-5 ({tiny_sd_dir})" in out
    assert "dreamface_texture  not on disk, optional: stages.texture-latent.guidance: texture path off" in out
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prior"] == "pretrained" and summary["finished"]
    assert summary["models"] == {"clip_l14": "pretrained", "sd15": "pretrained"}
    assert set(summary["switched_off"]) == {"dreamface_texture"}
    assert "generic SDS only" in summary["switched_off"]["dreamface_texture"]
    # config.yaml says what ran, so --resume and --export rebuild the same parts.
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["stages"]["texture-latent"]["guidance"]["texture_path"] is False
    assert config["stages"]["texture-image"]["guidance"]["texture_path"] is False
    assert config["stages"]["carve"]["guidance"]["type"] == "sds"
    # Re-export keeps the record.
    assert main(["--export", str(run_dir)]) == 0
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["switched_off"] == summary["switched_off"] and again["prior"] == "pretrained"


def test_a_required_missing_model_puts_the_whole_run_on_the_demo_prior_and_pretrained_names_all(
    tmp_path, capsys, offline, tiny_sd_dir
):
    from headgen.config.compose import compose
    from headgen.config.recipe import validate
    from headgen.prior.choice import choose_prior, switch_off_missing

    cfg = validate(compose("methods/dreamface.yaml", [f"models.sd15.local_dir={tiny_sd_dir}"]))
    logged: list[str] = []
    same, switched = switch_off_missing(cfg, logged.append)
    assert same is cfg and switched == {}  # clip_l14 is missing too: the demo prior stands in for all
    choice = choose_prior(cfg, logged.append)
    assert choice.mode == "demo" and set(choice.models.values()) == {"demo"}
    assert "DEMO PRIOR: no local weights for 'clip_l14'" in logged[-1]
    cfg = validate(compose("methods/dreamface.yaml", ["prior=pretrained"]))
    with pytest.raises(Exception) as info:
        choose_prior(switch_off_missing(cfg, logged.append)[0], logged.append)
    msg = str(info.value)
    assert "2 models the recipe cannot do without are not on disk" in msg
    assert "model 'clip_l14' = openai/clip-vit-large-patch14" in msg and "model 'sd15' =" in msg
    assert "dreamface_texture" not in msg  # optional: switched off, not demanded


def test_an_optional_model_a_part_cannot_do_without_is_a_clear_error(tmp_path, offline, tiny_sd_dir):
    from headgen.config.compose import compose
    from headgen.config.recipe import validate
    from headgen.errors import ConfigError
    from headgen.prior.choice import switch_off_missing

    cfg = validate(compose(RECIPE, ["prior=pretrained", "models.sd15.local_dir=/nonexistent",
                                    "models.sd15.optional=true"]))
    with pytest.raises(ConfigError, match=r"model 'sd15' is marked optional .* stages\.texture\.guidance\.model "
                                          r"cannot do without it"):
        switch_off_missing(cfg, print)
