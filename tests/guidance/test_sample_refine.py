"""The refine guidance (a CFG sample of the render as an image-space target), its DDIM sampler and
the LPIPS image loss built from torchvision/lpips-layout weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from guidance.base import GuidanceInput
from guidance.perceptual import LPIPS, ImageLoss, ImageLossConfig
from guidance.sample_refine import SampleRefineGuidance
from guidance.sampling import ddim_scheduler, dpm_solver_scheduler, noise_sample, sampling_timesteps, sdedit_sample
from headgen.cameras import Cameras
from headgen.config import parse
from headgen.errors import ConfigError, HeadgenError, ModelNotFoundError
from headgen.prior.backbone import Branch, DiffusionBackbone
from headgen.prior.demo.backbone import sd_alphas_cumprod

LPIPS_HEADS = Path(__file__).resolve().parents[1] / "data" / "lpips" / "vgg_v0.1.pth"


class PointBackbone(DiffusionBackbone):
    """The exact denoiser of a one-point data set per branch (x0_hat = that point), with SD's alphas."""

    def __init__(self, points: list[torch.Tensor]):
        super().__init__()
        self.num_train_timesteps = 1000
        self.alphas_cumprod = sd_alphas_cumprod()
        self.points = points

    def encode(self, images):
        self.calls["vae_encode"] += 1
        return images.permute(0, 3, 1, 2)[:, :1].repeat(1, 4, 1, 1)[..., ::4, ::4]

    def decode(self, latents):
        self.calls["vae_decode"] += 1
        x = latents[:, :3].repeat_interleave(4, -1).repeat_interleave(4, -2)
        return x.permute(0, 2, 3, 1)

    def eps(self, z_t, t, branches, views=None):
        self.calls["unet"] += 1
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return [(z_t - a.sqrt() * p) / (1 - a).sqrt() for p in self.points[: len(branches)]]


def branches(b: int = 1) -> list[Branch]:
    return [Branch(["a face"] * b, subject="a face"), Branch([""] * b)]


def test_ddim_scheduler_has_the_backbone_schedule():
    bb = PointBackbone([])
    sched = ddim_scheduler(bb)
    assert torch.allclose(sched.alphas_cumprod.float(), bb.alphas_cumprod, rtol=1e-5, atol=1e-7)
    assert sampling_timesteps(sched, 10, 1000) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert sampling_timesteps(sched, 10, 350) == [300, 200, 100, 0]
    assert sampling_timesteps(sched, 10, 0) == [0]  # always at least one denoising step
    with pytest.raises(ValueError, match="at least 1 step"):
        sampling_timesteps(sched, 0, 500)


@pytest.mark.parametrize("cfg", [1.0, 7.5])
def test_sdedit_with_an_exact_denoiser_lands_on_the_data(cfg):
    # With both branches predicting the same single point, CFG changes nothing and deterministic
    # DDIM reaches the point exactly, from any start.
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    bb = PointBackbone([target, target])
    z0 = torch.zeros(1, 4, 8, 8)
    z = sdedit_sample(bb, z0, 450, branches(), cfg, 10, torch.Generator().manual_seed(0))
    assert torch.allclose(z, target, atol=1e-4)
    assert bb.calls["unet"] == 5  # 400, 300, 200, 100, 0: one batched call per step


@pytest.mark.parametrize("make_scheduler", [ddim_scheduler, dpm_solver_scheduler])
def test_noise_sample_with_an_exact_denoiser_lands_on_the_data(make_scheduler):
    # HeadArtist's refine target: from pure noise, a one-point data set is reached by DDIM and by
    # DPM-Solver++ (both exact for x0_hat constant), one batched eps call per step.
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    bb = PointBackbone([target, target])
    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    scheduler = make_scheduler(bb)
    z = noise_sample(bb, start, branches(), 7.5, 25, scheduler)
    assert torch.allclose(z, target, atol=1e-3), (z - target).abs().max()
    assert bb.calls["unet"] == 25
    # The multistep solver's history is reset per sample: the same scheduler and noise, the same sample.
    assert torch.equal(noise_sample(bb, start, branches(), 7.5, 25, scheduler), z)
    with pytest.raises(ValueError, match="conditional, unconditional"):
        noise_sample(bb, start, branches()[:1], 7.5, 25, make_scheduler(bb))


def test_sdedit_cfg_extrapolates_away_from_the_unconditional_point():
    cond, uncond = torch.ones(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    z1 = sdedit_sample(PointBackbone([cond, uncond]), torch.zeros(1, 4, 4, 4), 999, branches(), 1.0, 20,
                       torch.Generator().manual_seed(0))
    z3 = sdedit_sample(PointBackbone([cond, uncond]), torch.zeros(1, 4, 4, 4), 999, branches(), 3.0, 20,
                       torch.Generator().manual_seed(0))
    assert torch.allclose(z1, cond, atol=1e-4)  # cfg 1: the conditional point
    assert float(z3.mean()) > 1.5  # cfg 3 overshoots past it


def _input(size: int = 32, b: int = 1) -> GuidanceInput:
    cams = Cameras.from_spherical(torch.zeros(b), torch.zeros(b), torch.full((b,), 3.0), torch.full((b,), 40.0), size)
    render = torch.rand(b, size, size, 3, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    return GuidanceInput({"rgb": render}, cams, ["front"] * b, "a face", 0, negative_prompt="blurry",
                         inputs={"landmark_map": torch.zeros(b, size, size, 3)})


def make(backbone, **options) -> SampleRefineGuidance:
    cfg = parse(SampleRefineGuidance.Config, {"model": "tiny", "resolution": 32, "sample_steps": 10, **options})
    return SampleRefineGuidance(cfg, None, backbone=backbone)


def test_refine_loss_is_the_image_distance_to_the_decoded_sample():
    target = torch.full((1, 4, 8, 8), 0.25)
    bb = PointBackbone([target, target])
    guidance = make(bb, use_controlnet=False, timesteps={"t_range": [0.3, 0.3]})
    inp = _input()
    out = guidance(inp, torch.Generator().manual_seed(0))
    assert bb.calls["unet"] == 4 and bb.calls["vae_encode"] == 1 and bb.calls["vae_decode"] == 1  # t 300, 200, 100, 0
    sample = bb.decode(target)  # the exact denoiser's sample, decoded
    expected = (inp.render["rgb"] - sample).pow(2).mean()
    assert torch.allclose(out["loss_refine"], expected, atol=1e-5)
    assert abs(float(out["t"]) - 0.3) < 1e-6
    out["loss_refine"].backward()
    assert inp.render["rgb"].grad is not None and inp.render["rgb"].grad.abs().sum() > 0


def test_refine_on_tiny_sd_with_landmark_controlnet(tiny_backbone):
    guidance = make(tiny_backbone, controlnet="tiny_cn", timesteps={"t_range": [0.2, 0.5]})
    inp = _input(size=32)
    out = guidance(inp, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss_refine"]) and out["loss_refine"] > 0
    n = tiny_backbone.calls["unet"]
    assert 3 <= n <= 6 and tiny_backbone.calls["controlnet:landmarks"] == n  # t in [200, 500]: 3-6 DDIM steps
    out["loss_refine"].backward()
    assert inp.render["rgb"].grad.abs().sum() > 0
    with pytest.raises(HeadgenError, match="sample-refine needs the input 'landmark_map'"):
        guidance(GuidanceInput({"rgb": torch.rand(1, 32, 32, 3)}, inp.cameras, ["front"], "a face", 0),
                 torch.Generator())


def test_refine_config_errors():
    with pytest.raises(ConfigError, match="sample_steps must be >= 1"):
        parse(SampleRefineGuidance.Config, {"sample_steps": 0})
    with pytest.raises(ConfigError, match="space must be rgb"):
        parse(SampleRefineGuidance.Config, {"space": "latent"})
    with pytest.raises(ConfigError, match="no SDS gradient to clip"):
        parse(SampleRefineGuidance.Config, {"grad_clip": 1.0})
    with pytest.raises(ConfigError, match="kind: lpips needs vgg"):
        parse(SampleRefineGuidance.Config, {"loss": {"kind": "lpips"}})


# ------------------------------------------------------------------------------------------ LPIPS
@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random weights saved with the real files' key layouts: torchvision vgg16 (.pth) and lpips' vgg.pth."""
    torch.manual_seed(0)
    model = LPIPS()
    for p in model.parameters():  # LPIPS' heads are non-negative
        if p.dim() == 4 and p.shape[-1] == 1:
            p.data.abs_()
    d = tmp_path_factory.mktemp("lpips")
    vgg = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file has the classifier too
    torch.save(vgg, d / "vgg16.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("lin")},
              str(d / "vgg.safetensors"))
    return d / "vgg16.pth", d / "vgg.safetensors", model


def test_lpips_loads_weight_files_and_measures_distance(lpips_files):
    vgg, linear, reference = lpips_files
    model = LPIPS.from_files(vgg, linear)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 32, 32, 3, generator=g)
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-7)
    noise = torch.randn(x.shape, generator=g)
    small = model(x, (x + 0.05 * noise).clamp(0, 1))
    large = model(x, (x + 0.3 * noise).clamp(0, 1))
    assert (small > 0).all() and (large > small).all()
    loss = ImageLoss(parse(ImageLossConfig, {"kind": "lpips", "vgg": str(vgg), "linear": str(linear),
                                             "l2_weight": 1.0}))
    y = x.clone().requires_grad_(True)
    value = loss(y, (x + 0.1 * noise).clamp(0, 1))
    value.backward()
    assert value > 0 and y.grad.abs().sum() > 0


def test_lpips_errors_name_the_file(lpips_files, tmp_path):
    vgg, linear, _ = lpips_files
    with pytest.raises(ModelNotFoundError, match="vgg weights not found at .*missing.pth"):
        LPIPS.from_files(tmp_path / "missing.pth", linear)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelNotFoundError, match="could not be read"):
        LPIPS.from_files(vgg, bad)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(ModelNotFoundError, match="lack .*lin1"):
        LPIPS.from_files(vgg, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="differ"):
        ImageLoss(ImageLossConfig())(torch.zeros(1, 4, 4, 3), torch.zeros(1, 8, 8, 3))


def test_lpips_reads_the_real_lpips_head_file(lpips_files):
    # The lpips package's own v0.1 vgg.pth (tests/data/lpips): the key layout and the CUDA-saved
    # storages must load through the weights_only loader; its calibrated heads are non-negative.
    vgg, _, _ = lpips_files
    model = LPIPS.from_files(vgg, LPIPS_HEADS)
    heads = [getattr(model, f"lin{k}").model[1].weight for k in range(5)]
    assert [h.shape[1] for h in heads] == [64, 128, 256, 512, 512]
    assert all((h >= 0).all() and h.sum() > 0 for h in heads)
    x = torch.rand(1, 32, 32, 3)
    assert float(model(x, x)) == 0.0 and float(model(x, 1 - x)) > 0.0


def test_lpips_equals_the_lpips_package():
    # Runs where the lpips package and torchvision are installed (not on the CPU CI machine): the
    # same random VGG16 trunk and lpips' own heads through both implementations.
    lpips = pytest.importorskip("lpips")
    reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    trunk = {}
    for s in range(1, 6):
        for name, value in getattr(reference.net, f"slice{s}").state_dict().items():
            trunk[f"features.{name}"] = value
    ours = LPIPS()
    ours.features.load_state_dict({k.removeprefix("features."): v for k, v in trunk.items()})
    heads = torch.load(LPIPS_HEADS, map_location="cpu", weights_only=True)
    ours.load_state_dict(heads, strict=False)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 64, 64, 3, generator=g)
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    with torch.no_grad():
        expected = reference(a.permute(0, 3, 1, 2) * 2 - 1, b.permute(0, 3, 1, 2) * 2 - 1).flatten()
        assert torch.allclose(ours(a, b), expected, rtol=1e-5, atol=1e-7)
