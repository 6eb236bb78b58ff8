"""DreamFace's PBR maps brought to a configured size (issue 21, item 3): Real-ESRGAN (RRDBNet) or the
Stable Diffusion x4 upscaler when their weights are given, Lanczos otherwise; tiling; errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pygltflib
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from converters.dreamface_pbr import DreamFacePBR, FaceRestorationNotImplemented
from headgen.config import build, parse
from headgen.config.recipe import ModelSpec
from headgen.errors import ConfigError, HeadgenError, ModelNotFoundError
from headgen.export.gltf import GlbExporter
from headgen.export.obj import ObjExporter
from headgen.models.realesrgan import RRDBNet, load_realesrgan, read_state_dict
from headgen.models.upscale import tiled
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16  # the decoded maps' size in these tests (the recipe's: 512)
TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}
# Receptive field of the tiny net in input pixels: 17 convolutions at the input size, 3 more at 2x/4x.
TINY_REACH = 19


@pytest.fixture(scope="module")
def head():
    return build("head", {"type": "builtin"}).load()


def make_ctx(head, models=None):
    logs: list[str] = []
    config = SimpleNamespace(models=models or {}, prompt="the face of an old sailor", negative_prompt="", seed=0)
    return SimpleNamespace(head=head, device=torch.device("cpu"), metrics={}, log=logs.append, config=config, logs=logs)


def textured(ctx) -> ParametricMesh:
    """A texture-image-stage head: a colourful albedo and a bumpy detail normal map, both SIZE px."""
    cfg = parse(ParametricMeshConfig, {"normal_map_size": SIZE, "texture_size": SIZE, "texture": "both"})
    rep = ParametricMesh(cfg, ctx)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        rep.albedo.copy_(torch.rand(SIZE, SIZE, 3, generator=g))
        rep.normal_map.add_(0.3 * torch.randn(SIZE, SIZE, 3, generator=g))
    return rep


def convert(ctx, **options) -> ParametricMesh:
    return DreamFacePBR(parse(DreamFacePBR.Config, options)).convert(textured(ctx), ctx)


def native_maps(ctx) -> ParametricMesh:
    """The stage's maps before upscaling (upscale_size null)."""
    return convert(make_ctx(ctx.head), upscale_size=None)


def tiny_net(scale: int = 4, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    net = RRDBNet(3, 3, scale=scale, **TINY).eval()
    with torch.no_grad():  # bigger weights than the default init, so the output is not a near-constant
        for p in net.parameters():
            p.mul_(3.0)
    return net


def pil_lanczos(image: torch.Tensor, size: int) -> torch.Tensor:
    channels = [np.asarray(Image.fromarray(image[..., c].numpy().astype(np.float32)).resize(
        (size, size), Image.Resampling.LANCZOS)) for c in range(image.shape[-1])]
    return torch.from_numpy(np.stack(channels, -1))


def expected_public_keys(num_block: int) -> list[str]:
    """RealESRGAN_x4plus.pth's 'params_ema' keys as the public basicsr RRDBNet names them."""
    names = ["conv_first"]
    for i in range(num_block):
        names += [f"body.{i}.rdb{r}.conv{c}" for r in (1, 2, 3) for c in (1, 2, 3, 4, 5)]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


# ------------------------------------------------------------------ the architecture


def test_rrdbnet_keys_and_shapes_match_realesrgan_x4plus():
    net = RRDBNet(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    state = net.state_dict()
    assert list(state) == expected_public_keys(23) and len(state) == 702
    assert state["conv_first.weight"].shape == (64, 3, 3, 3)
    assert state["body.22.rdb3.conv4.weight"].shape == (32, 64 + 3 * 32, 3, 3)
    assert state["body.0.rdb1.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)
    assert state["conv_last.weight"].shape == (3, 64, 3, 3)
    assert sum(p.numel() for p in net.parameters()) == 16_697_987  # the published model's parameter count
    # x2plus: the same trunk on a pixel-unshuffled input (4x the channels)
    assert RRDBNet(3, 3, scale=2, num_feat=64, num_block=23).state_dict()["conv_first.weight"].shape == (64, 12, 3, 3)


@pytest.mark.parametrize("scale", [4, 2])
def test_rrdbnet_output_size(scale):
    net = tiny_net(scale)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 12, 20)).shape == (1, 3, 12 * scale, 20 * scale)


@pytest.mark.parametrize("layout", ["params_ema", "params", "plain", "safetensors"])
def test_weight_files_load_safely_and_size_the_net(tmp_path, layout):
    net = tiny_net(2)
    state = net.state_dict()
    if layout == "safetensors":
        path = tmp_path / "tiny.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "tiny.pth"
        torch.save(state if layout == "plain" else {layout: state, "meta": 1}, path)
    loaded = load_realesrgan(path)
    assert (loaded.scale, len(loaded.body), loaded.conv_first.out_channels) == (2, 1, 8)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


class Payload:
    """Not a tensor: torch.load(weights_only=True) must refuse to build it."""


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": Payload()}, path)
    with pytest.raises(HeadgenError, match="cannot read .*evil.pth as a Real-ESRGAN weight file"):
        read_state_dict(path)


# ------------------------------------------------------------------ tiling


def test_tiles_with_context_match_one_pass():
    net = tiny_net()
    x = torch.rand(1, 3, 40, 24)
    pad = 24  # >= TINY_REACH: each tile sees everything its core depends on
    assert pad >= TINY_REACH
    with torch.no_grad():
        whole = net(F.pad(x, (pad,) * 4, mode="replicate"))[..., 4 * pad:-4 * pad, 4 * pad:-4 * pad]
        tiles = tiled(net, x, 4, tile=16, pad=pad)
    assert tiles.shape == (1, 3, 160, 96)
    assert torch.allclose(tiles, whole, atol=1e-5), (tiles - whole).abs().max()


def test_feathered_tiles_blend_to_the_whole_image():
    x = torch.rand(1, 3, 20, 28)

    def nearest(t):
        return F.interpolate(t, scale_factor=2, mode="nearest")

    out = tiled(nearest, x, 2, tile=8, pad=8, feather=True)
    assert torch.allclose(out, nearest(x), atol=1e-6)


# ------------------------------------------------------------------ the pbr stage


def test_lanczos_when_no_model_is_given(head, tmp_path):
    ctx = make_ctx(head)
    rep = convert(ctx, upscale_size=4 * SIZE + 8)
    size = 4 * SIZE + 8
    assert rep.albedo.shape == (size, size, 3) and rep.specular_map.shape == (size, size, 1)
    assert rep.normal_map.shape == (size, size, 3)
    assert (rep.cfg.texture_size, rep.cfg.normal_map_size) == (size, size)
    m = ctx.metrics
    assert (m["pbr/upscale"], m["pbr/upscale_size"], m["pbr/texture_size"]) == ("lanczos", size, SIZE)
    assert {m[f"pbr/upscale_{k}"] for k in ("diffuse", "specular", "normal")} == {"lanczos"}
    small = native_maps(ctx)
    assert torch.allclose(rep.albedo, pil_lanczos(small.albedo.detach(), size).clamp(0, 1), atol=1e-6)
    assert torch.allclose(rep.specular_map, pil_lanczos(small.specular_map, size).clamp(0, 1), atol=1e-6)
    encoded = F.normalize(small.normal_map.detach(), dim=-1) * 0.5 + 0.5
    assert torch.allclose(rep.normal_map, F.normalize(pil_lanczos(encoded, size) * 2 - 1, dim=-1), atol=1e-6)
    assert torch.allclose(rep.normal_map.norm(dim=-1), torch.ones(size, size), atol=1e-5)
    # the head itself is the one handed in: identity, displacement
    assert torch.equal(rep.beta_star, small.beta_star) and torch.equal(rep.displacement, small.displacement)


def test_without_upscale_size_the_maps_keep_their_size(head):
    ctx = make_ctx(head)
    rep = convert(ctx, upscale_size=None)
    assert rep.albedo.shape[0] == rep.normal_map.shape[0] == SIZE
    assert (ctx.metrics["pbr/upscale"], ctx.metrics["pbr/upscale_size"]) == ("none", SIZE)


def test_lanczos_reaches_4096(head):
    ctx = make_ctx(head)
    rep = convert(ctx, upscale_size=4096)
    assert rep.albedo.shape == (4096, 4096, 3) and rep.normal_map.shape == (4096, 4096, 3)
    assert rep.specular_map.shape == (4096, 4096, 1) and ctx.metrics["pbr/upscale_size"] == 4096


def esrgan_models(path: Path) -> dict[str, ModelSpec]:
    return {"tiny_esrgan": ModelSpec(hub_id="test/tiny-esrgan", kind="realesrgan", local_dir=str(path))}


def test_realesrgan_enlarges_diffuse_and_specular_and_lanczos_the_normals(head, tmp_path):
    net = tiny_net()
    (tmp_path / "w").mkdir()
    torch.save({"params_ema": net.state_dict()}, tmp_path / "w" / "RealESRGAN_tiny.pth")
    ctx = make_ctx(head, esrgan_models(tmp_path / "w"))
    # one window holding the whole 16 px map with 8 px of context on each side
    rep = convert(ctx, upscale_size=4 * SIZE, upscale_model="tiny_esrgan", tile=SIZE, tile_pad=8)
    m = ctx.metrics
    assert (m["pbr/upscale"], m["pbr/upscale_size"]) == ("realesrgan:tiny_esrgan", 4 * SIZE)
    assert (m["pbr/upscale_diffuse"], m["pbr/upscale_specular"], m["pbr/upscale_normal"]) == (
        "realesrgan:tiny_esrgan", "realesrgan:tiny_esrgan", "lanczos")
    small = native_maps(ctx)

    def esrgan(image):
        x = F.pad(image.permute(2, 0, 1)[None], (8,) * 4, mode="replicate")
        return net(x)[0, :, 32:-32, 32:-32].permute(1, 2, 0).clamp(0, 1)

    with torch.no_grad():
        assert torch.allclose(rep.albedo, esrgan(small.albedo.detach()), atol=1e-5)
        spec = esrgan(small.specular_map.expand(-1, -1, 3)).mean(-1, keepdim=True)
    assert torch.allclose(rep.specular_map, spec, atol=1e-5)
    assert not torch.allclose(rep.albedo, pil_lanczos(small.albedo.detach(), 4 * SIZE).clamp(0, 1), atol=1e-2)
    encoded = F.normalize(small.normal_map.detach(), dim=-1) * 0.5 + 0.5
    assert torch.allclose(rep.normal_map, F.normalize(pil_lanczos(encoded, 4 * SIZE) * 2 - 1, dim=-1), atol=1e-6)


def test_realesrgan_x8_is_a_lanczos_x2_then_one_model_pass(head, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_net().state_dict(), str(path))
    ctx = make_ctx(head, esrgan_models(path))  # local_dir may name the file itself
    rep = convert(ctx, upscale_size=8 * SIZE, upscale_model="tiny_esrgan", tile=8, tile_pad=8,
                  model_maps=["diffuse", "specular", "normal"])
    assert rep.albedo.shape == (8 * SIZE, 8 * SIZE, 3) and rep.specular_map.shape == (8 * SIZE, 8 * SIZE, 1)
    assert rep.normal_map.shape == (8 * SIZE, 8 * SIZE, 3)
    assert ctx.metrics["pbr/upscale_normal"] == "realesrgan:tiny_esrgan"
    assert torch.allclose(rep.normal_map.norm(dim=-1), torch.ones(8 * SIZE, 8 * SIZE), atol=1e-5)
    model = "realesrgan:tiny_esrgan"
    assert ctx.logs == [f"pbr: maps 16 -> 128 px (diffuse: {model}, specular: {model}, normal: {model})"]


def test_exporters_write_the_upscaled_maps(head, tmp_path):
    ctx = make_ctx(head)
    size = 4 * SIZE
    rep = convert(ctx, upscale_size=size)
    obj = ObjExporter(ObjExporter.Config()).export(rep, ctx, tmp_path)
    for key in ("diffuse_map", "normal_map", "specular_map"):
        assert iio.imread(obj[key]).shape[:2] == (size, size), key
    glb = GlbExporter(GlbExporter.Config()).export(rep, ctx, tmp_path)["glb"]
    doc = pygltflib.GLTF2.load(glb)
    blob = doc.binary_blob()
    sizes = set()
    for image in doc.images:
        view = doc.bufferViews[image.bufferView]
        sizes.add(iio.imread(blob[view.byteOffset:view.byteOffset + view.byteLength], extension=".png").shape[:2])
    assert sizes == {(size, size)} and len(doc.images) == 3  # diffuse, metallic-roughness, normal


def save_tiny_sd_upscaler(folder: Path) -> Path:
    """A tiny random StableDiffusionUpscalePipeline (x4 VAE, 7-channel UNet with noise-level classes)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from headgen.models.random_init import write_char_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=7, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4, num_class_embeds=351)
    vae = AutoencoderKL(block_out_channels=(4, 4, 4), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=1,
                        norm_num_groups=2, sample_size=32, scaling_factor=0.08333)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=77, vocab_size=2 * 256 + 2,
                                        projection_dim=16, bos_token_id=512, eos_token_id=513, pad_token_id=513))
    write_char_tokenizer(folder / "char-tokenizer")
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(folder / "char-tokenizer"), unet=unet,
        low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"), max_noise_level=350)
    pipe.save_pretrained(folder / "sd-x4")
    return folder / "sd-x4"


def test_sd_upscaler_through_from_pretrained(head, tmp_path):
    folder = save_tiny_sd_upscaler(tmp_path)
    models = {"tiny_sd_up": ModelSpec(hub_id="test/tiny-sd-x4", kind="sd-upscale", local_dir=str(folder))}
    ctx = make_ctx(head, models)
    rep = convert(ctx, upscale_size=4 * SIZE, upscale_model="tiny_sd_up", tile=8, tile_pad=8, sd_steps=2)
    assert rep.albedo.shape == (4 * SIZE, 4 * SIZE, 3) and rep.specular_map.shape == (4 * SIZE, 4 * SIZE, 1)
    m = ctx.metrics
    assert (m["pbr/upscale"], m["pbr/upscale_diffuse"], m["pbr/upscale_normal"]) == (
        "sd-upscale:tiny_sd_up", "sd-upscale:tiny_sd_up", "lanczos")
    albedo = rep.albedo.detach()
    assert 0 <= float(albedo.min()) and float(albedo.max()) <= 1 and float(albedo.std()) > 0.01
    # the run's seed makes it repeatable
    again = convert(make_ctx(head, models), upscale_size=4 * SIZE, upscale_model="tiny_sd_up", tile=8, tile_pad=8,
                    sd_steps=2)
    assert torch.equal(rep.albedo, again.albedo)


# ------------------------------------------------------------------ errors


def test_missing_weights_say_where_to_get_them(head, tmp_path):
    ctx = make_ctx(head, esrgan_models(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFoundError, match=r"local_dir=.*nowhere does not exist.*RealESRGAN_x4plus\.pth"):
        convert(ctx, upscale_size=64, upscale_model="tiny_esrgan")
    (tmp_path / "empty").mkdir()
    ctx = make_ctx(head, esrgan_models(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match="holds no weight files .*put exactly one"):
        convert(ctx, upscale_size=64, upscale_model="tiny_esrgan")
    sd = {"sd_up": ModelSpec(hub_id="x/y", kind="sd-upscale", local_dir=str(tmp_path / "no-sd"))}
    with pytest.raises(ModelNotFoundError, match="models.sd_up.local_dir=.*no-sd does not exist"):
        convert(make_ctx(head, sd), upscale_size=64, upscale_model="sd_up")
    empty_sd = {"sd_up": ModelSpec(hub_id="x/y", kind="sd-upscale", local_dir=str(tmp_path / "empty"))}
    with pytest.raises(ModelNotFoundError, match="loading StableDiffusionUpscalePipeline"):
        convert(make_ctx(head, empty_sd), upscale_size=64, upscale_model="sd_up")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_corrupt_weight_file_is_named(head, tmp_path, suffix):
    path = tmp_path / f"RealESRGAN_x4plus{suffix}"
    good = tmp_path / "good.pth"
    torch.save({"params_ema": tiny_net().state_dict()}, good)
    path.write_bytes(good.read_bytes()[:200])  # an interrupted download
    ctx = make_ctx(head, esrgan_models(path))
    with pytest.raises(HeadgenError, match=f"cannot read .*RealESRGAN_x4plus\\{suffix} as a Real-ESRGAN weight file.*"
                                           "download it again"):
        convert(ctx, upscale_size=64, upscale_model="tiny_esrgan")


def test_another_architecture_is_refused(head, tmp_path):
    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": {"body.0.weight": torch.zeros(64, 3, 3, 3), "body.0.bias": torch.zeros(64)}}, path)
    with pytest.raises(HeadgenError, match="is not an RRDBNet .*SRVGGNet"):
        convert(make_ctx(head, esrgan_models(path)), upscale_size=64, upscale_model="tiny_esrgan")
    state = tiny_net().state_dict()
    del state["conv_hr.bias"]
    torch.save(state, path)
    with pytest.raises(HeadgenError, match=r"does not match an RRDBNet .*missing \['conv_hr.bias'\]"):
        convert(make_ctx(head, esrgan_models(path)), upscale_size=64, upscale_model="tiny_esrgan")


def test_model_and_option_errors(head, tmp_path):
    with pytest.raises(ConfigError, match="unknown upscale_model 'realesrgan'; define it under models:"):
        convert(make_ctx(head), upscale_size=64, upscale_model="realesrgan")
    clip = {"clip": ModelSpec(hub_id="openai/clip", kind="clip")}
    with pytest.raises(ConfigError, match="has kind 'clip'; a super-resolution model needs kind realesrgan or sd-up"):
        convert(make_ctx(head, clip), upscale_size=64, upscale_model="clip")
    torch.save(tiny_net().state_dict(), tmp_path / "t.pth")
    with pytest.raises(ConfigError, match="the map is 16 px already, nothing to enlarge to 16"):
        convert(make_ctx(head, esrgan_models(tmp_path / "t.pth")), upscale_size=SIZE, upscale_model="tiny_esrgan")
    bad = [({"upscale_model": "x", "upscale_size": None}, "needs upscale_size"), ({"upscale_size": 4}, "8 to 16384 px"),
           ({"upscale_size": 32768}, "8 to 16384 px"), ({"upscale_size": 64, "tile": 100}, "multiple of 8"),
           ({"tile_pad": 4}, "multiple of 8"), ({"model_maps": ["diffuse", "diffuse"]}, "twice"),
           ({"model_maps": ["albedo"]}, "expected one of .diffuse., .specular., .normal.")]
    for options, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse(DreamFacePBR.Config, options)


def test_face_restoration_is_not_implemented():
    with pytest.raises(NotImplementedError, match="face restoration \\(RestoreFormer.*not implemented") as info:
        parse(DreamFacePBR.Config, {"face_restoration": "restoreformer"})
    assert isinstance(info.value, FaceRestorationNotImplemented) and isinstance(info.value, HeadgenError)


def test_the_recipes_name_both_upscalers_and_share_the_default_size():
    from headgen.config.compose import compose
    from headgen.config.recipe import validate

    cfg = validate(compose("methods/dreamface.yaml", []))
    assert cfg.models["realesrgan_x4plus"].kind == "realesrgan"
    assert cfg.models["sd_x4_upscaler"].hub_id == "stabilityai/stable-diffusion-x4-upscaler"
    assert cfg.models["sd_x4_upscaler"].kind == "sd-upscale"
    default = DreamFacePBR.Config().upscale_size
    assert cfg.stages["pbr"].config.converter.config.upscale_size == default
    edit = validate(compose("methods/dreamface-texture-edit.yaml", ["source=RUN_DIR", "prompt=a head"]))
    assert edit.stages["pbr"].config.converter.config.upscale_size == default  # an edit's maps match its source's
