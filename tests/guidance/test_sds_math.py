"""SDS against its closed form on a tiny real UNet, and pass counting."""

from __future__ import annotations

import torch

from guidance.base import GuidanceInput
from guidance.distill import DistillConfig, sds_loss
from guidance.sds import SDSGuidance
from guidance.timesteps import TimestepConfig, sample_timesteps, sds_weight
from headgen.config import parse
from headgen.prior.backbone import Branch, Control


def test_sds_loss_gradient_is_grad_over_batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 8, 8, generator=g).requires_grad_(True)
    grad = torch.randn(3, 4, 8, 8, generator=g)
    sds_loss(z, grad).backward()
    # z - (z - grad) is grad only up to float32 rounding of z's magnitude (~1e-7 absolute), so an
    # absolute tolerance: a relative one fails at random on elements of grad near zero.
    assert torch.allclose(z.grad, grad / 3, rtol=0.0, atol=1e-6)
    assert not torch.allclose(z.grad, grad / 2, rtol=0.0, atol=1e-6)


def test_sds_gradient_matches_closed_form(tiny_backbone):
    cfg = parse(DistillConfig, {"model": "tiny", "cfg": 7.5, "space": "latent", "image_key": "latent",
                                "timesteps": {"weighting": "sds"}})
    guidance = SDSGuidance(cfg, None, backbone=tiny_backbone)
    z = torch.randn(2, 8, 8, 4, requires_grad=True)
    inp = GuidanceInput(render={"latent": z}, cameras=None, view_labels=["front", "back"], prompt="a face", step=0,
                        negative_prompt="blurry")
    out = guidance(inp, torch.Generator().manual_seed(1))
    out["loss_sds"].backward()

    gen = torch.Generator().manual_seed(1)
    t = sample_timesteps(cfg.timesteps, 0, 1, 2, 1000, gen)
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    z0 = z.detach().permute(0, 3, 1, 2)
    a = tiny_backbone.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
    texts = ["a face, front view", "a face, back view", "blurry", "blurry"]
    emb = tiny_backbone.text(texts)
    eps = tiny_backbone.unet(z_t.repeat(2, 1, 1, 1), t.repeat(2), encoder_hidden_states=emb).sample
    eps_c, eps_u = eps.chunk(2)
    w = sds_weight(tiny_backbone.alphas_cumprod, t, "sds").view(-1, 1, 1, 1)
    expected = w * (eps_u + 7.5 * (eps_c - eps_u) - noise) / 2
    assert torch.allclose(z.grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)
    assert 0.02 <= out["t"].item() <= 0.98 and out["grad_norm"] > 0


def test_one_unet_call_per_step_and_controlnet_only_where_active(tiny_backbone):
    bb = tiny_backbone
    z = torch.randn(3, 4, 8, 8)
    t = torch.tensor([100, 500, 900])
    landmarks = torch.rand(3, 64, 64, 3)
    active = torch.tensor([True, False, True])  # the middle view is a back view: plain UNet
    bb.calls.clear()
    eps_c, eps_u = bb.eps(z, t, [Branch(["a"] * 3, [Control("landmarks", landmarks, 1.0, active)]), Branch([""] * 3)])
    assert bb.calls["unet"] == 1 and bb.calls["controlnet:landmarks"] == 1
    # The inactive sample equals a plain UNet pass; active samples differ from it.
    plain_c, _ = bb.eps(z, t, [Branch(["a"] * 3), Branch([""] * 3)])
    assert torch.allclose(eps_c[1], plain_c[1], atol=1e-6)
    assert not torch.allclose(eps_c[0], plain_c[0], atol=1e-6)


def test_decreasing_timesteps_fall_in_equal_steps():
    cfg = TimestepConfig(t_range=(0.0, 0.98), schedule="decreasing")
    ts = [int(sample_timesteps(cfg, s, 11, 1, 1000, torch.Generator())[0]) for s in range(11)]
    assert ts[0] == 980 and ts[-1] == 1
    diffs = {a - b for a, b in zip(ts, ts[1:])}
    assert max(diffs) - min(diffs) <= 1


def test_non_finite_gradient_is_not_hidden(tiny_backbone, monkeypatch):
    """A NaN noise prediction makes the SDS loss NaN (the stage then stops, keeping the last good
    checkpoint) unless zero_non_finite_grad asks for threestudio's zeroing."""
    z = torch.randn(2, 8, 8, 4, requires_grad=True)
    inp = GuidanceInput(render={"latent": z}, cameras=None, view_labels=["front", "front"], prompt="a face", step=0)
    eps = tiny_backbone.eps
    monkeypatch.setattr(tiny_backbone, "eps", lambda *a, **k: [torch.full_like(e, float("nan")) for e in eps(*a, **k)])
    losses = {}
    for zero in (False, True):
        cfg = parse(DistillConfig, {"model": "tiny", "space": "latent", "image_key": "latent",
                                    "zero_non_finite_grad": zero})
        losses[zero] = SDSGuidance(cfg, None, backbone=tiny_backbone)(inp, torch.Generator().manual_seed(0))["loss_sds"]
    assert torch.isnan(losses[False])
    assert losses[True] == 0.0
