"""DreamFace's texture LDM training (Eq. 9) on tiny models: the 5-channel UNet, the learned C_d / C_u,
the diffusers folder it writes, checkpoints and resume after a kill, and clear errors."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from testpaths import REPO

from headgen.config.recipe import ModelSpec
from headgen.models.zoo import load_component
from headgen.train.__main__ import main as train_main
from headgen.train.texture_ldm import LearnedTokens, widen_conv_in

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def train(args, capsys) -> tuple[int, str, str]:
    code = train_main(["texture-ldm", *args])
    out, err = capsys.readouterr()
    return code, out, err


def common(uv_demo, tiny_sd, out) -> list[str]:
    return ["--data", str(uv_demo), "--pretrained", str(tiny_sd), "--out", str(out), "--batch-size", "2",
            "--lr", "1e-3", "--token-lr", "1e-2"]


def test_widened_unet_starts_as_the_pretrained_one(tiny_sd):
    unet = load_component("sd", ModelSpec(hub_id="x/sd", local_dir=str(tiny_sd)), "unet")
    z, t, hidden = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 16)
    before = unet(z, t, encoder_hidden_states=hidden).sample
    widen_conv_in(unet)
    assert unet.config.in_channels == 5 and unet.conv_in.weight.shape[1] == 5
    for mask in (torch.zeros(2, 1, 8, 8), torch.rand(2, 1, 8, 8)):  # whatever the mask holds
        torch.testing.assert_close(unet(torch.cat([z, mask], 1), t, encoder_hidden_states=hidden).sample, before)


def test_learned_tokens_replace_only_their_rows():
    base = torch.nn.Embedding(10, 4)
    learned = LearnedTokens(base, [8, 9], torch.ones(2, 4) * torch.tensor([[1.0], [2.0]]))
    ids = torch.tensor([[1, 8, 3, 9]])
    out = learned(ids)
    torch.testing.assert_close(out[0, [0, 2]], base(torch.tensor([1, 3])))
    assert torch.equal(out[0, 1], torch.ones(4)) and torch.equal(out[0, 3], 2 * torch.ones(4))
    out.sum().backward()
    assert float(base.weight.grad[8:].abs().sum()) == 0  # the table's own rows of the new ids get nothing
    assert torch.equal(learned.vectors.grad, torch.ones(2, 4))
    assert torch.equal(learned.bake().weight[9], 2 * torch.ones(4))


def test_trains_and_writes_a_diffusers_folder_with_the_tokens(uv_demo, tiny_sd, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    out = tmp_path / "tex"
    code, stdout, err = train([*common(uv_demo, tiny_sd, out), "--steps", "4", "--checkpoint-every", "2"], capsys)
    assert code == 0, err
    assert f"models.dreamface_texture.local_dir={out}" in stdout
    assert "texture LDM" in err and "4/4" in err  # the progress bar
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    spec = ModelSpec(hub_id="local/texture", local_dir=str(out))
    unet = load_component("tex", spec, "unet")
    assert unet.config.in_channels == 5
    assert float(unet.conv_in.weight[:, 4].abs().sum()) > 0  # the mask channel learned (it started at zero)
    base = load_component("sd", ModelSpec(hub_id="x/sd", local_dir=str(tiny_sd)), "unet")
    assert not torch.equal(unet.conv_in.weight[:, :4], base.conv_in.weight)
    tok, enc = load_component("tex", spec, "tokenizer"), load_component("tex", spec, "text_encoder")
    tokens = load_file(str(out / "learned_tokens.safetensors"))
    assert set(tokens) == {"<dreamface-texture>", "<dreamface-undesired>"}
    for name, vec in tokens.items():
        assert vec.shape == (1, 16)
        token_id = tok.convert_tokens_to_ids(name)
        assert tok("an old man, " + name).input_ids.count(token_id) == 1  # one id, not its characters
        torch.testing.assert_close(enc.get_input_embeddings().weight[token_id], vec[0])
    # started from a phrase's mean embedding; the two domains' tokens both moved and differ
    assert not torch.allclose(tokens["<dreamface-texture>"], tokens["<dreamface-undesired>"])
    # diffusers itself loads the folder as a pipeline
    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe.unet.config.in_channels == 5 and len(pipe.tokenizer) == 516


def test_a_killed_run_resumes_to_the_uninterrupted_result(uv_demo, tiny_sd, tmp_path, capsys, subprocess_env):
    from safetensors.torch import load_file

    steps = ["--steps", "60", "--checkpoint-every", "2"]
    straight = tmp_path / "straight"
    code, _, err = train([*common(uv_demo, tiny_sd, straight), *steps], capsys)
    assert code == 0, err

    killed = tmp_path / "killed"
    env = {**subprocess_env, "OMP_NUM_THREADS": "1"}  # as this module's one thread: bit-identical sums
    cmd = [sys.executable, "-m", "headgen.train", "texture-ldm", *common(uv_demo, tiny_sd, killed), *steps]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step-0000002").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    proc.stderr.close()
    done = sorted(p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert "step-0000060" not in done and not (killed / "unet").exists(), "the run finished before the kill"
    last = int(done[-1].removeprefix("step-"))

    code, out, err = train([*common(uv_demo, tiny_sd, killed), *steps, "--resume"], capsys)
    assert code == 0, err
    assert f"resuming from step {last} (" in out
    assert f"{last}/60" in err  # the progress bar continues from there
    a = load_file(str(straight / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(killed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta = load_file(str(straight / "learned_tokens.safetensors"))
    tb = load_file(str(killed / "learned_tokens.safetensors"))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)

    # more steps later: --resume with a larger --steps continues from the final checkpoint
    code, out, err = train([*common(uv_demo, tiny_sd, killed), "--steps", "62", "--checkpoint-every", "2",
                            "--resume"], capsys)
    assert code == 0 and "resuming from step 60 (" in out, err


def test_clear_errors(uv_demo, tiny_sd, tmp_path, capsys):
    out = tmp_path / "tex"
    code, _, err = train([*common(uv_demo, tiny_sd, out), "--steps", "2", "--resume"], capsys)
    assert code == 2 and f"--resume: {out} has no checkpoint (checkpoints/step-N); start without --resume" in err
    code, _, err = train([*common(uv_demo, tiny_sd, out), "--steps", "2"], capsys)
    assert code == 0, err
    code, _, err = train([*common(uv_demo, tiny_sd, out), "--steps", "2"], capsys)
    assert code == 2 and f"--out {out} has checkpoints of an earlier run: pass --resume" in err
    code, _, err = train([*common(uv_demo, tiny_sd, out), "--steps", "4", "--resume", "--lr", "0.5"], capsys)
    assert code == 2 and "these options differ from the run being resumed: --lr 0.5 (the checkpoint's: 0.001)" in err
    code, _, err = train([*common(uv_demo, tiny_sd, out), "--steps", "1", "--resume"], capsys)
    assert code == 2 and "--steps 1 is below the checkpoint's step 2" in err

    (tmp_path / "bad").mkdir()
    code, _, err = train([*common(tmp_path / "bad", tiny_sd, tmp_path / "o2"), "--steps", "1"], capsys)
    assert code == 2 and err.count("error:") == 1 and "is not a usable UV texture folder (2 problems)" in err
    code, _, err = train([*common(uv_demo, tiny_sd, tmp_path / "o3"), "--steps", "1", "--model", "nope"], capsys)
    assert code == 2 and "--model nope: not in configs/models.yaml" in err
    code, _, err = train([*common(uv_demo, tmp_path / "nowhere", tmp_path / "o4"), "--steps", "1"], capsys)
    assert code == 2 and "--pretrained" in err and "no such folder" in err
    code, _, err = train([*common(uv_demo, tiny_sd, tmp_path / "o5"), "--steps", "1", "--desired-token", "a"],
                         capsys)
    assert code == 2 and "token 'a' is already in the base model's tokenizer" in err
