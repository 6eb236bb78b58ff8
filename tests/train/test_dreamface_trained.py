"""DreamFace on the pretrained path with what the training commands make: the trained texture LDM
(texture path on in both texture stages) and the trained D_s / D_n in the pbr stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from runhelpers import DREAMFACE_TINY

from headgen.cli import main as launch_main
from headgen.train.__main__ import main as train_main
from headgen.train.pbr_decoders import overrides as decoder_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def logged_scalars(folder: Path) -> dict[str, list[float]]:
    """{tag: values} of a stage's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(folder.glob("events.out.tfevents.*"))))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from huggingface_hub import constants  # its cache path was fixed when it was first imported

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_dreamface_runs_with_the_trained_texture_ldm_and_pbr_decoders(uv_demo, tiny_sd, tmp_path, capsys, offline):
    from headgen.models.random_init import save_random_clip

    tex, pbr = tmp_path / "texture-ldm", tmp_path / "pbr"
    base = ["--data", str(uv_demo), "--pretrained", str(tiny_sd), "--steps", "3", "--batch-size", "2"]
    assert train_main(["texture-ldm", *base, "--out", str(tex)]) == 0
    assert train_main(["pbr-decoders", *base, "--out", str(pbr)]) == 0
    capsys.readouterr()

    clip = save_random_clip(tmp_path / "tiny-clip")
    code = launch_main(["--config", "methods/dreamface.yaml", "--output-dir", str(tmp_path / "out"), "prior=pretrained",
                        f"models.sd15.local_dir={tiny_sd}", f"models.clip_l14.local_dir={clip}",
                        f"models.dreamface_texture.local_dir={tex}", *decoder_overrides(pbr),
                        f"stages.coarse.selector.cache_dir={tmp_path / 'pool'}",
                        f"stages.hair.selector.cache_dir={tmp_path / 'hair'}", *DREAMFACE_TINY,
                        "stages.texture-latent.log_every=1", "stages.texture-image.log_every=1"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "texture path off" not in out and "DEMO PRIOR" not in out
    assert f"dreamface_texture  pretrained: dreamface/texture-ldm-unreleased ({tex})" in out
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("Run directory: "))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["prior"] == "pretrained"
    assert summary["models"]["dreamface_texture"] == "pretrained" and not summary.get("switched_off")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for stage in ("texture-latent", "texture-image"):
        assert config["stages"][stage]["guidance"]["texture_path"] is True
        # every step logged both paths' SDS (the texture path through the trained 5-channel UNet):
        # loss_sds = lambda_g L_g + lambda_tau L_tau with both weights 1
        logged = logged_scalars(run_dir / "stages" / stage / "logs")
        assert len(logged["train/sds_texture"]) == 2 and min(logged["train/sds_texture"]) > 0
        for total, g, tau in zip(logged["train/loss_sds"], logged["train/sds_generic"], logged["train/sds_texture"]):
            assert total == pytest.approx(g + tau, rel=1e-5)
    assert summary["metrics"]["pbr/specular_source"] == "decoder:dreamface_specular"
    assert summary["metrics"]["pbr/normal_source"] == "decoder:dreamface_normal"
