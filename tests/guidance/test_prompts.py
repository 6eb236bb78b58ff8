"""Prompt processing: view templates, learned tokens, the embedding cache (tiny CLIP text model)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from headgen.config.recipe import ModelSpec
from headgen.errors import ConfigError
from headgen.models.random_init import save_random_sd
from headgen.models.zoo import load_component
from headgen.prior.prompts import PromptConfig, TextEmbedder, view_texts


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    folder = save_random_sd(tmp_path_factory.mktemp("sd") / "sd", controlnet=False)
    spec = ModelSpec(hub_id="example/tiny", local_dir=str(folder))
    return folder, spec


def fresh(spec):
    return load_component("sd", spec, "tokenizer"), load_component("sd", spec, "text_encoder")


def test_view_dependent_templates():
    cfg = PromptConfig(templates={
        "front": "{prompt}, front view of head", "side": "{prompt}, side view of head",
        "back": "{prompt}, back view of head, <back-view>, without eyes, without faces",
        "overhead": "{prompt}, overhead view of head"})
    texts = view_texts(cfg, "a sailor", ["front", "back", "side"])
    assert texts[0] == "a sailor, front view of head"
    assert texts[1] == "a sailor, back view of head, <back-view>, without eyes, without faces"
    assert view_texts(PromptConfig(view_dependent=False), "x", ["back"]) == ["x"]
    with pytest.raises(ValueError, match="must contain"):
        PromptConfig(templates={v: "no placeholder" for v in ("front", "side", "back", "overhead")})


def test_embeddings_are_cached_on_disk(tiny_text, tmp_path):
    _, spec = tiny_text
    cfg = PromptConfig(cache_dir=str(tmp_path / "cache"))
    emb = TextEmbedder(*fresh(spec), "tiny", cfg)
    a = emb(["a face", "a face", "a dog"])
    assert a.shape == (3, 77, 16) and torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])
    assert emb.cache.misses == 2
    again = TextEmbedder(*fresh(spec), "tiny", cfg)
    b = again(["a dog"])
    assert again.cache.misses == 0 and again.cache.hits >= 1
    assert torch.equal(b[0], a[2])
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2


def test_learned_token_changes_embedding(tiny_text, tmp_path):
    _, spec = tiny_text
    path = tmp_path / "back-view.safetensors"
    save_file({"<back-view>": torch.full((16,), 3.0)}, str(path))
    cfg = PromptConfig(token_file=str(path), cache_dir=None)
    tok, enc = fresh(spec)
    emb = TextEmbedder(tok, enc, "tiny", cfg)
    assert "<back-view>" in tok.get_vocab()
    row = enc.get_input_embeddings().weight[tok.convert_tokens_to_ids("<back-view>")]
    assert torch.equal(row, torch.full((16,), 3.0))
    with_tok, without = emb(["head, <back-view>", "head"])
    assert not torch.allclose(with_tok, without)
    bad = tmp_path / "bad.safetensors"
    save_file({"<x>": torch.zeros(7)}, str(bad))
    with pytest.raises(ConfigError, match="dimension 7 but the text encoder expects 16"):
        TextEmbedder(*fresh(spec), "tiny", PromptConfig(token_file=str(bad), cache_dir=None))
    with pytest.raises(ConfigError, match="no such file"):
        TextEmbedder(*fresh(spec), "tiny", PromptConfig(token_file=str(tmp_path / "missing.safetensors")))
