"""``launch.py --models``: what is on disk (a fake Hugging Face cache, a local_dir), its size, how to get the rest."""

from __future__ import annotations

import shutil

import pytest

from headgen.cli import main
from headgen.models.random_init import save_random_clip, save_random_sd

RECIPE = "methods/dreamface.yaml"  # sd15, clip_l14 and the optional dreamface_texture


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("inventory")
    return save_random_sd(root / "sd", controlnet=False), save_random_clip(root / "clip")


@pytest.fixture
def hf_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads HF_HOME when first imported; its cache path is looked up at call time.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path / "hf"


def fake_hub_snapshot(hf_home, repo_id, source, commit="0123456789abcdef0123456789abcdef01234567"):
    """Lay ``source`` out as the Hub cache does: hub/models--org--name/snapshots/<commit>, refs/main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def size(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def models_out(capsys, *args):
    code = main(["--models", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_present_in_the_hub_cache_missing_and_in_a_local_dir(hf_home, models, capsys):
    sd, clip = models
    snapshot = fake_hub_snapshot(hf_home, "stable-diffusion-v1-5/stable-diffusion-v1-5", sd)
    out = models_out(capsys, RECIPE)
    blocks = {block.split()[0]: block for block in out.split("\n") if block and not block.startswith(" ")}
    assert set(blocks) == {"clip_l14", "dreamface_texture", "sd15", "1"}
    lines = out.splitlines()
    sd_at = lines.index("sd15  (diffusers: stable-diffusion-v1-5/stable-diffusion-v1-5)")
    assert lines[sd_at + 1] == "    used by: dreamface"
    assert lines[sd_at + 2] == f"    on disk, {size(snapshot) / 1024:.1f} KB: {snapshot}"
    clip_at = lines.index("clip_l14  (clip: openai/clip-vit-large-patch14)")
    assert lines[clip_at + 2] == "    NOT on disk"
    assert lines[clip_at + 3] == "    get it:  hf download openai/clip-vit-large-patch14"
    tex_at = lines.index("dreamface_texture  (diffusers: dreamface/texture-ldm-unreleased)  optional")
    assert "not published: train or obtain your own, then set models.dreamface_texture.local_dir" in lines[tex_at + 3]
    assert lines[-1].startswith("1 of 3 models on disk") and "Without them prior=auto runs the demo prior" in lines[-1]

    # The missing CLIP given as a local_dir override: on disk; the texture LDM is optional.
    out = models_out(capsys, RECIPE, f"models.clip_l14.local_dir={clip}")
    assert f"    on disk, {size(clip) / 1024:.1f} KB: {clip}" in out.splitlines()
    assert out.splitlines()[-1].endswith(
        "; missing: dreamface_texture. They are optional: prior=auto switches off the parts that need them.")


def test_an_incomplete_copy_is_not_on_disk_and_the_command_fetches_only_what_runs_load(
    hf_home, models, capsys, tmp_path
):
    sd, _ = models
    broken = tmp_path / "broken-sd"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "vae")
    out = models_out(capsys, RECIPE, f"models.sd15.local_dir={broken}")
    assert f"    NOT on disk (models.sd15.local_dir={broken} holds no complete copy)" in out
    assert (f"    get it:  hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'model_index.json' "
            f"'unet/*' 'vae/*' 'text_encoder/*' 'tokenizer/*' 'scheduler/*' --local-dir {broken}") in out


def test_every_recipe_and_bad_recipes(hf_home, capsys):
    out = models_out(capsys)
    assert "controlnet_face_sd21  (controlnet: CrucibleAI/ControlNetMediaPipeFace)" in out
    assert "    used by: headartist, headartist-edit" in out
    assert ("    get it:  hf download CrucibleAI/ControlNetMediaPipeFace --include 'diffusion_sd15/*'") in out
    assert out.splitlines()[-1].startswith("0 of 7 models on disk (0 B); missing:")
    assert main(["--models", "methods/nope.yaml"]) == 2
    assert "nope.yaml" in capsys.readouterr().err
