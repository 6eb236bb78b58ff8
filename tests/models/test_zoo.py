"""The real loading path on tiny random models saved to disk: identical outputs after reload."""

from __future__ import annotations

import pytest
import torch

from headgen.config.recipe import ModelSpec
from headgen.errors import ModelNotFoundError
from headgen.models.random_init import save_random_clip, save_random_sd
from headgen.models.zoo import is_available, load_component


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return save_random_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


def test_tiny_sd_reloads_identically(tiny_sd):
    from diffusers import UNet2DConditionModel

    spec = ModelSpec(hub_id="example/tiny-sd", local_dir=str(tiny_sd))
    assert is_available(spec, ("unet", "vae", "text_encoder", "tokenizer", "scheduler"))
    unet = load_component("sd", spec, "unet")
    direct = UNet2DConditionModel.from_pretrained(tiny_sd / "unet")
    x, t, emb = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 16)
    assert torch.equal(unet(x, t, emb).sample, direct(x, t, emb).sample)
    assert not any(p.requires_grad for p in unet.parameters())
    vae = load_component("sd", spec, "vae")
    lat = vae.encode(torch.rand(1, 3, 64, 64)).latent_dist.mean
    assert lat.shape == (1, 4, 8, 8)  # SD's 8x factor
    tok = load_component("sd", spec, "tokenizer")
    ids = tok(["a face"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    text = load_component("sd", spec, "text_encoder")
    assert text(ids).last_hidden_state.shape == (1, 77, 16)
    sched = load_component("sd", spec, "scheduler")
    assert sched.alphas_cumprod.shape == (1000,)
    assert sched.alphas_cumprod[0] == pytest.approx(1 - 0.00085, rel=1e-4)


def test_tiny_controlnet_and_clip(tiny_sd, tmp_path):
    cn_spec = ModelSpec(hub_id="example/cn", local_dir=str(tiny_sd.with_name("tiny-sd-controlnet")))
    cn = load_component("cn", cn_spec, "controlnet")
    down, mid = cn(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=torch.randn(1, 77, 16),
                   controlnet_cond=torch.rand(1, 3, 64, 64), return_dict=False)
    assert mid.shape[0] == 1 and len(down) > 0
    clip_dir = save_random_clip(tmp_path / "clip")
    spec = ModelSpec(hub_id="example/clip", local_dir=str(clip_dir))
    clip = load_component("clip", spec, "clip")
    tok = load_component("clip", spec, "clip_tokenizer")
    emb = clip.get_text_features(**tok(["a face"], return_tensors="pt")).pooler_output
    assert emb.shape[-1] == 16


def test_missing_model_names_it_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = ModelSpec(hub_id="someone/not-downloaded")
    assert not is_available(spec)
    with pytest.raises(ModelNotFoundError) as exc:
        load_component("sd15", spec, "unet")
    msg = str(exc.value)
    assert "model 'sd15' = someone/not-downloaded" in msg and "local_dir" in msg and "prior=demo" in msg
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_component("sd15", ModelSpec(hub_id="x/y", local_dir=str(tmp_path / "nope")), "unet")


def test_speed_options_keep_the_outputs(tiny_sd):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    spec = ModelSpec(hub_id="example/tiny-sd", local_dir=str(tiny_sd))
    x, t, emb = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 16)
    base = load_component("sd", spec, "unet")
    assert {type(p) for p in base.attn_processors.values()} == {AttnProcessor2_0}  # diffusers' SDPA default
    ref = base(x, t, emb).sample

    classic = load_component("sd", ModelSpec(**{**spec.__dict__, "attention": "classic"}), "unet")
    assert {type(p) for p in classic.attn_processors.values()} == {AttnProcessor}
    torch.testing.assert_close(classic(x, t, emb).sample, ref, atol=1e-5, rtol=1e-4)

    cl = load_component("sd", ModelSpec(**{**spec.__dict__, "channels_last": True}), "vae")
    conv = cl.encoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain_vae = load_component("sd", spec, "vae")
    img = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(cl.encode(img).latent_dist.mean, plain_vae.encode(img).latent_dist.mean,
                               atol=1e-5, rtol=1e-4)

    compiled = load_component("sd", ModelSpec(**{**spec.__dict__, "compile": True}), "unet")
    assert type(compiled).__name__ == "OptimizedModule" and compiled._orig_mod.config.in_channels == 4
    assert compiled.config.cross_attention_dim == base.config.cross_attention_dim  # attributes read through
    with pytest.raises(Exception, match="attention"):
        from headgen.config import parse

        parse(ModelSpec, {"hub_id": "x/y", "attention": "flash"})
