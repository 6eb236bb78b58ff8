"""Caches of values computed with a model's weights notice new weights at the same path (tiny
random models saved with save_pretrained, loaded through the project's loaders)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from headgen.config import build, parse
from headgen.config.recipe import ModelSpec
from headgen.digest import files_fingerprint
from headgen.models.fingerprint import weights_fingerprint
from headgen.models.random_init import save_random_clip, save_random_sd
from headgen.models.zoo import load_component
from headgen.prior import PriorChoice
from headgen.prior.clip import load_clip
from headgen.prior.load import load_pretrained
from headgen.prior.prompts import PromptConfig
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig
from selection.clip_select import ClipSelect, ClipSelectConfig

TEXTS = ["a face", "an old man with a grey beard"]


# ---------------------------------------------------------------------------------------- helpers
def sd_models(folder):
    return {"sd": ModelSpec(hub_id="example/tiny-sd", local_dir=str(folder))}


def embed(models, cfg, texts=TEXTS):
    """Embeddings of ``texts`` through the run's loader (load_pretrained -> TextEmbedder) and its cache."""
    backbone = load_pretrained(models, "sd", {}, cfg, "cpu")
    return backbone.text(texts), backbone.text.cache


def reference(folder, texts=TEXTS):
    """The same embeddings computed by hand from the weights now in ``folder`` (no cache)."""
    spec = sd_models(folder)["sd"]
    tok, enc = load_component("sd", spec, "tokenizer"), load_component("sd", spec, "text_encoder")
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids)[0]


def retrain_text_encoder(folder, seed):
    """Other weights of the same architecture (same file sizes) saved in place, as a resumed
    texture-ldm run does to OUT/text_encoder."""
    config = CLIPTextConfig.from_pretrained(folder / "text_encoder")
    torch.manual_seed(seed)
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")


@pytest.fixture
def sd_folder(tmp_path):
    return save_random_sd(tmp_path / "tex", controlnet=False)


# ---------------------------------------------------------------------------------------- text embeddings
def test_text_embeddings_are_recomputed_after_new_weights_in_the_same_folder(sd_folder, tmp_path):
    models, cfg = sd_models(sd_folder), PromptConfig(cache_dir=str(tmp_path / "cache"))
    weights = sd_folder / "text_encoder" / "model.safetensors"
    first, cache = embed(models, cfg)
    assert first.shape == (2, 77, 16) and cache.misses == 2
    torch.testing.assert_close(first, reference(sd_folder), rtol=0, atol=0)

    # unchanged folder, new run: every text comes from the disk cache, nothing is computed
    again, cache = embed(models, cfg)
    assert cache.misses == 0 and cache.hits >= 2 and torch.equal(again, first)

    size = weights.stat().st_size
    retrain_text_encoder(sd_folder, seed=1)
    assert weights.stat().st_size == size  # only the values changed: a size check alone would miss it
    new, cache = embed(models, cfg)
    assert cache.misses == 2 and cache.hits == 2  # computed (2 misses), then read back for the batch
    expected = reference(sd_folder)
    torch.testing.assert_close(new, expected, rtol=0, atol=0)
    assert (new - first).abs().max() > 1e-2  # really other embeddings, not the old ones

    # the new weights are cached in turn: the next run hits
    last, cache = embed(models, cfg)
    assert cache.misses == 0 and torch.equal(last, expected)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one key per set of weights


def test_a_retrained_token_file_with_the_same_name_is_not_served_old_embeddings(sd_folder, tmp_path):
    path = tmp_path / "learned_tokens.safetensors"
    cfg = PromptConfig(token_file=str(path), cache_dir=str(tmp_path / "cache"))
    models, texts = sd_models(sd_folder), ["a head, <dreamface-texture>"]
    save_file({"<dreamface-texture>": torch.tensor([3.0] + [0.0] * 15)}, str(path))
    first, cache = embed(models, cfg, texts)
    assert cache.misses == 1
    # same token, same sum (the old key hashed the sum), other values
    save_file({"<dreamface-texture>": torch.tensor([0.0] * 15 + [3.0])}, str(path))
    second, cache = embed(models, cfg, texts)
    assert cache.misses == 1 and (second - first).abs().max() > 1e-3
    again, cache = embed(models, cfg, texts)
    assert cache.misses == 0 and torch.equal(again, second)


def test_text_cache_key_names_dtype_and_fingerprint(sd_folder, tmp_path):
    _, cache = embed(sd_models(sd_folder), PromptConfig(cache_dir=str(tmp_path / "cache")))
    fingerprint = weights_fingerprint(sd_models(sd_folder)["sd"], ("text_encoder", "tokenizer"))
    assert fingerprint is not None and fingerprint.startswith("files:")
    assert cache.model_key == f"{sd_folder}/@::float32|{fingerprint}"


# ---------------------------------------------------------------------------------------- fingerprints
def test_files_fingerprint_follows_writes_not_reads(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"a" * 64)
    before = files_fingerprint([folder])
    assert len(before) == 16
    (folder / "w.bin").read_bytes()
    assert files_fingerprint([folder]) == before  # reading (loading) the weights changes nothing
    st = (folder / "w.bin").stat()
    time.sleep(0.05)  # file times tick with the kernel's coarse clock (a few ms)
    (folder / "w.bin").write_bytes(b"b" * 64)  # same size, and the old mtime put back (cp -p):
    os.utime(folder / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files_fingerprint([folder]) != before  # ctime still tells
    assert files_fingerprint([tmp_path / "absent"]) != files_fingerprint([folder])


def test_hub_ids_are_keyed_by_the_resolved_snapshot_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--example--tiny-sd"
    spec = ModelSpec(hub_id="example/tiny-sd")
    assert weights_fingerprint(spec, ("text_encoder",)) is None  # not downloaded: nothing to key on
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit / "text_encoder").mkdir(parents=True)
        (repo / "snapshots" / commit / "text_encoder" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert weights_fingerprint(spec, ("text_encoder",)) == "rev:" + "a" * 40
    (repo / "refs" / "main").write_text("b" * 40)  # `hf download` fetched a new main
    assert weights_fingerprint(spec, ("text_encoder",)) == "rev:" + "b" * 40
    pinned = ModelSpec(hub_id="example/tiny-sd", revision="a" * 40)
    assert weights_fingerprint(pinned, ("text_encoder",)) == "rev:" + "a" * 40
    # the commit transformers reports for the loaded model wins: it is what was actually read
    loaded = SimpleNamespace(config=SimpleNamespace(_commit_hash="c" * 40))
    assert weights_fingerprint(spec, ("text_encoder",), loaded) == "rev:" + "c" * 40


# ---------------------------------------------------------------------------------------- CLIP pools
def test_clip_pool_is_recomputed_after_new_clip_weights_in_the_same_folder(tmp_path):
    head = build("head", {"type": "builtin"}).load()
    folder = save_random_clip(tmp_path / "clip", seed=0)
    models = {"tiny_clip": ModelSpec(hub_id="example/tiny-clip", local_dir=str(folder), kind="clip")}

    def select():
        ctx = SimpleNamespace(head=head, device=torch.device("cpu"), state={}, metrics={}, log=lambda _: None,
                              prior=PriorChoice("pretrained"), current_stage="coarse",
                              config=SimpleNamespace(prompt=TEXTS[1], edit_prompt="", models=models,
                                                     prior="pretrained"))
        rep = ParametricMesh(parse(ParametricMeshConfig, {"num_identity": 8, "displacement": False,
                                                          "normal_map_size": 0, "texture": "none"}),
                             SimpleNamespace(head=head, device=torch.device("cpu")))
        sel = ClipSelect(parse(ClipSelectConfig, {"model": "tiny_clip", "pool_size": 4, "batch_size": 4,
                                                  "resolution": 64, "cache_dir": str(tmp_path / "pools")}))
        sel.select(rep, ctx)
        return ctx.metrics["coarse/pool_cache"], load_clip(models, "tiny_clip").key

    cache, key = select()
    assert cache == "miss" and key.startswith("clip[files:")
    assert select() == ("hit", key)
    save_random_clip(folder, seed=1)  # other weights, same files and sizes
    cache, new_key = select()
    assert cache == "miss" and new_key != key
    assert len(list((tmp_path / "pools").iterdir())) == 2
