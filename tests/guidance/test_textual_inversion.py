"""Textual inversion on tiny models: the command learns a token, saves it, and the saved token loads in
the prompt processor (and in diffusers' own loader) as one new id carrying the learned vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headgen.models.zoo import load_component
from headgen.prior.prompts import PromptConfig, TextEmbedder, load_token_file
from headgen.train.__main__ import main as train_main

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture
def images(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "backs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = np.zeros((80, 64, 3), np.uint8)
        img[:, :, 0] = 90 + 40 * i  # brownish "hair" of varying shade
        img[20:60, 10:54] = rng.integers(0, 255, (40, 44, 3))
        iio.imwrite(folder / f"{i}.png", img)
    return folder


def learn(args, capsys) -> tuple[int, str, str]:
    """``python -m headgen.train textual-inversion ARGS``: (exit code, stdout, stderr)."""
    code = train_main(["textual-inversion", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_learns_a_token_that_the_prompt_processor_loads(tiny_sd_dir, tiny_models, images, tmp_path, capsys):
    out = tmp_path / "back-view.safetensors"
    code, stdout, err = learn(["--images", str(images), "--token", "<back-view>", "--init-token", "a", "--model-dir",
                               str(tiny_sd_dir), "--out", str(out), "--steps", "5", "--resolution", "64",
                               "--batch-size", "2", "--lr", "0.1"], capsys)
    assert code == 0, err
    assert f"prompt.token_file={out}" in stdout
    tokens = load_token_file(out)
    assert set(tokens) == {"<back-view>"} and tokens["<back-view>"].shape == (1, 16)
    learned = tokens["<back-view>"][0]
    spec = tiny_models["tiny"]
    tok, enc = load_component("sd", spec, "tokenizer"), load_component("sd", spec, "text_encoder")
    init_row = enc.get_input_embeddings().weight[tok.encode("a", add_special_tokens=False)[0]].detach().clone()
    assert not torch.allclose(learned, init_row), "the embedding did not move"
    # Started from the init token's row: 5 AdamW steps move a coordinate by at most
    # 5 * lr * (1 - beta1) / sqrt(1 - beta2) (= 3.2 lr with the default betas).
    assert (learned - init_row).abs().max() <= 5 * 0.1 * 3.2

    without = TextEmbedder(tok, enc, "tiny", PromptConfig(cache_dir=None))(["head, back view, <back-view>"])
    emb = TextEmbedder(tok, enc, "tiny", PromptConfig(token_file=str(out), cache_dir=None))
    token_id = tok.convert_tokens_to_ids("<back-view>")
    assert tok("head, <back-view>").input_ids.count(token_id) == 1  # one id, not its characters
    torch.testing.assert_close(enc.get_input_embeddings().weight[token_id].detach(), learned)
    with_token = emb(["head, back view, <back-view>"])
    assert with_token.shape == without.shape and not torch.allclose(with_token, without)


def test_saved_token_loads_in_diffusers(tiny_sd_dir, images, tmp_path, capsys):
    """The file is what diffusers' load_textual_inversion reads (the format prompt.token_file documents)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    out = tmp_path / "t.safetensors"
    code, _, err = learn(["--images", str(images), "--token", "<back-view>", "--init-token", "a", "--model-dir",
                          str(tiny_sd_dir), "--out", str(out), "--steps", "1", "--resolution", "64",
                          "--batch-size", "1"], capsys)
    assert code == 0, err
    d = tiny_sd_dir
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(d / "vae"), text_encoder=CLIPTextModel.from_pretrained(d / "text_encoder"),
        tokenizer=AutoTokenizer.from_pretrained(d / "tokenizer"), unet=UNet2DConditionModel.from_pretrained(d / "unet"),
        scheduler=DDPMScheduler.from_pretrained(d / "scheduler"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.load_textual_inversion(str(out))
    token_id = pipe.tokenizer.convert_tokens_to_ids("<back-view>")
    torch.testing.assert_close(pipe.text_encoder.get_input_embeddings().weight[token_id].detach(),
                               load_token_file(out)["<back-view>"][0])


def test_unknown_train_command_is_named(capsys):
    assert train_main(["textual-inversoin"]) == 2
    assert "unknown command 'textual-inversoin' (did you mean 'textual-inversion'?)" in capsys.readouterr().err


def test_clear_errors(tiny_sd_dir, images, tmp_path, capsys):
    common = ["--model-dir", str(tiny_sd_dir), "--out", str(tmp_path / "x.safetensors"), "--steps", "1",
              "--resolution", "64"]
    code, _, err = learn(["--images", str(tmp_path / "none"), "--token", "<x>", "--init-token", "a", *common], capsys)
    assert code == 2 and "no such folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = learn(["--images", str(tmp_path / "empty"), "--token", "<x>", "--init-token", "a", *common], capsys)
    assert code == 2 and "no images" in err
    code, _, err = learn(["--images", str(images), "--token", "a", "--init-token", "b", *common], capsys)
    assert code == 2 and "already a word of the tokenizer" in err
    code, _, err = learn(["--images", str(images), "--token", "<x>", "--init-token", "ab cd", *common], capsys)
    assert code == 2 and "must be a single token" in err
    code, _, err = learn(["--images", str(images), "--token", "<x>", "--init-token", "a", "--model", "nope",
                          "--out", str(tmp_path / "x.safetensors")], capsys)
    assert code == 2 and "not in configs/models.yaml" in err
    assert not (tmp_path / "x.safetensors").exists()
