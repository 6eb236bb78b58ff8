"""DreamFace's D_s / D_n training (Eq. 15) on tiny models: VAE-layout folders the pbr stage loads, the
L1 objective going down, resume equal to an uninterrupted run, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from headgen.config.recipe import ModelSpec
from headgen.models.zoo import load_component
from headgen.train.__main__ import main as train_main
from headgen.train.uv_data import check_folder, load_normals, load_specular, load_textures

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def train(args, capsys) -> tuple[int, str, str]:
    code = train_main(["pbr-decoders", *args])
    out, err = capsys.readouterr()
    return code, out, err


def common(data, tiny_sd, out) -> list[str]:
    return ["--data", str(data), "--pretrained", str(tiny_sd), "--out", str(out), "--batch-size", "2", "--lr", "1e-3"]


def l1_on_triples(folder, tiny_sd, uv_demo) -> dict[str, float]:
    """Eq. 15's two terms over every triple, with the decoders in ``folder`` (None: the base VAE's decoder)."""
    ds = check_folder(uv_demo, need_triples=True)
    base = ModelSpec(hub_id="x/sd", local_dir=str(tiny_sd))
    vae = load_component("sd", base, "vae")
    with torch.no_grad():
        u = vae.encode(load_textures(ds.triples, 64)).latent_dist.mean
        targets = {"specular": load_specular(ds.triples, 64), "normal": load_normals(ds.triples, 64)}
        out = {}
        for m, target in targets.items():
            dec = vae if folder is None else load_component(m, ModelSpec(hub_id="x", local_dir=str(folder / m)), "vae")
            out[m] = float(F.l1_loss(dec.decode(u).sample, target))
    return out


def test_trains_decoders_the_pbr_stage_can_load(uv_demo, tiny_sd, tmp_path, capsys):
    out = tmp_path / "pbr"
    code, stdout, err = train([*common(uv_demo, tiny_sd, out), "--steps", "12", "--checkpoint-every", "6"], capsys)
    assert code == 0, err
    assert "PBR decoders" in err and "12/12" in err
    assert "stages.pbr.converter.specular_decoder=dreamface_specular" in stdout
    assert f"local_dir: {out / 'specular'}" in stdout
    base = load_component("sd", ModelSpec(hub_id="x/sd", local_dir=str(tiny_sd)), "vae")
    for m in ("specular", "normal"):
        vae = load_component(m, ModelSpec(hub_id="local/x", local_dir=str(out / m)), "vae")
        for (name, p), q in zip(vae.encoder.named_parameters(), base.encoder.parameters()):
            assert torch.equal(p, q), f"{m}: the encoder is the base's ({name})"
        assert not torch.equal(vae.decoder.conv_out.weight, base.decoder.conv_out.weight)
        assert vae.config.scaling_factor == base.config.scaling_factor
    before, after = l1_on_triples(None, tiny_sd, uv_demo), l1_on_triples(out, tiny_sd, uv_demo)
    for m in before:
        assert after[m] < 0.8 * before[m], (m, before, after)


def test_resume_continues_exactly(uv_demo, tiny_sd, tmp_path, capsys):
    from safetensors.torch import load_file

    straight, parts = tmp_path / "straight", tmp_path / "parts"
    assert train([*common(uv_demo, tiny_sd, straight), "--steps", "4", "--checkpoint-every", "2"], capsys)[0] == 0
    assert train([*common(uv_demo, tiny_sd, parts), "--steps", "2", "--checkpoint-every", "2"], capsys)[0] == 0
    code, out, err = train([*common(uv_demo, tiny_sd, parts), "--steps", "4", "--checkpoint-every", "2",
                            "--resume"], capsys)
    assert code == 0 and "resuming from step 2 (" in out, err
    for m in ("specular", "normal"):
        a = load_file(str(straight / m / "vae" / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(parts / m / "vae" / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), m


def test_clear_errors(uv_demo, tiny_sd, tmp_path, capsys):
    import shutil

    code, _, err = train([*common(uv_demo, tiny_sd, tmp_path / "o1"), "--steps", "1", "--perceptual-weight", "1"],
                         capsys)
    assert code == 2 and "the LPIPS perceptual term of Stable Diffusion's loss is not implemented" in err
    code, _, err = train([*common(uv_demo, tiny_sd, tmp_path / "o1"), "--steps", "1", "--adversarial-weight", "0.5"],
                         capsys)
    assert code == 2 and "the patch-GAN adversarial term of Stable Diffusion's loss is not implemented" in err
    data = shutil.copytree(uv_demo, tmp_path / "data")
    shutil.rmtree(data / "normal")
    code, _, err = train([*common(data, tiny_sd, tmp_path / "o2"), "--steps", "1"], capsys)
    assert code == 2 and err.count("error:") == 1
    assert "(2 problems)" in err and "half (diffuse, specular, normal) triples: demo_000 has specular/ but no normal/" \
        in err and "no (diffuse, specular, normal) triple" in err
    assert not (tmp_path / "o2").exists()

    # a resume must find the data of the interrupted run (other files would change the draws)
    data = shutil.copytree(uv_demo, tmp_path / "data2")
    assert train([*common(data, tiny_sd, tmp_path / "o3"), "--steps", "1"], capsys)[0] == 0
    (data / "captions" / "demo_000.txt").write_text("a different caption\n")
    code, _, err = train([*common(data, tiny_sd, tmp_path / "o3"), "--steps", "2", "--resume"], capsys)
    assert code == 2 and "the files of --data changed since the checkpoint" in err
