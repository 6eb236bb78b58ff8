"""Textual inversion on tiny models: the learned token is saved and loads in the prompt processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guidance.prompts import PromptConfig, TextEmbedder, load_token_file
from guidance.textual_inversion import main
from headgen.models.zoo import load_component


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


def test_learns_a_token_that_the_prompt_processor_loads(tiny_sd_dir, tiny_models, images, tmp_path, capsys):
    out = tmp_path / "back-view.safetensors"
    code = main(["--images", str(images), "--token", "<back-view>", "--init-token", "a", "--model-dir",
                 str(tiny_sd_dir), "--out", str(out), "--steps", "5", "--resolution", "64", "--batch-size", "2",
                 "--lr", "0.1"])
    assert code == 0, capsys.readouterr().err
    tokens = load_token_file(out)
    assert set(tokens) == {"<back-view>"} and tokens["<back-view>"].shape == (1, 16)
    spec = tiny_models["tiny"]
    tok, enc = load_component("sd", spec, "tokenizer"), load_component("sd", spec, "text_encoder")
    init_row = enc.get_input_embeddings().weight[tok.encode("a", add_special_tokens=False)[0]].detach().clone()
    assert not torch.allclose(tokens["<back-view>"][0], init_row), "the embedding did not move"
    emb = TextEmbedder(tok, enc, "tiny", PromptConfig(token_file=str(out), cache_dir=None))
    a, b = emb(["head, <back-view>", "head"])
    assert not torch.allclose(a, b)


def test_clear_errors(tiny_sd_dir, tmp_path, capsys):
    code = main(["--images", str(tmp_path / "none"), "--token", "<x>", "--init-token", "a", "--model-dir",
                 str(tiny_sd_dir), "--out", str(tmp_path / "x.safetensors"), "--steps", "1"])
    assert code == 2 and "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = main(["--images", str(tmp_path / "empty"), "--token", "<x>", "--init-token", "a", "--model-dir",
                 str(tiny_sd_dir), "--out", str(tmp_path / "x.safetensors"), "--steps", "1"])
    assert code == 2 and "no images" in capsys.readouterr().err
