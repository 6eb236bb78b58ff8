"""The demo prior's mathematics against brute force."""

from __future__ import annotations

import torch

from headgen.prior.demo.autoencoder import LinearAutoencoder
from headgen.prior.demo.denoiser import eps_prediction, posterior_mean


def test_posterior_mean_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    n, m, d = 3, 5, 12
    data = torch.randn(n, m, d, generator=g)
    a = torch.tensor([0.9, 0.5, 0.1])
    x_t = torch.randn(n, d, generator=g)
    got = posterior_mean(x_t, data, a)
    for k in range(n):
        dist = torch.distributions.Normal(a[k].sqrt() * data[k], (1 - a[k]).sqrt())
        logp = dist.log_prob(x_t[k]).sum(-1)  # log N(x_t; sqrt(a) x_i, (1-a) I) for each i
        w = torch.softmax(logp, 0)
        assert torch.allclose(got[k], (w[:, None] * data[k]).sum(0), atol=1e-5)


def test_eps_of_a_single_point_is_exact():
    x0 = torch.randn(1, 1, 8)
    noise = torch.randn(1, 8)
    a = torch.tensor([0.3])
    x_t = a.sqrt() * x0[:, 0] + (1 - a).sqrt() * noise
    assert torch.allclose(eps_prediction(x_t, x0, a), noise, atol=1e-5)


def test_linear_autoencoder_shapes_and_inverse():
    ae = LinearAutoencoder()
    img = torch.rand(2, 64, 64, 3)
    z = ae.encode(img)
    assert z.shape == (2, 4, 8, 8)
    back = ae.decode(z)
    assert back.shape == img.shape
    blocks = torch.nn.functional.avg_pool2d(img.permute(0, 3, 1, 2), 8)
    assert torch.allclose(ae.encode(back), z, atol=1e-5)
    assert torch.allclose(back.permute(0, 3, 1, 2)[:, :, ::8, ::8], blocks.clamp(0, 1), atol=1e-5)
    assert torch.allclose(ae.encode_pooled(blocks.permute(0, 2, 3, 1)), z, atol=1e-5)


def test_posterior_mean_is_exact_in_float32_at_small_t():
    """At t = 20 the posterior is sharp and ||x_t - sqrt(a) x_i||^2 is a small difference of large
    numbers: the float32 result must match a float64 brute force to 1e-5 relative."""
    from headgen.prior.demo.backbone import sd_alphas_cumprod

    g = torch.Generator().manual_seed(0)
    d, m = 4 * 64 * 64, 24
    base = torch.randn(1, 1, d, generator=g)
    data = base + 1e-3 * torch.randn(1, m, d, generator=g)  # close data points: a spread posterior
    a = sd_alphas_cumprod()[torch.tensor([20])]
    x_t = a.sqrt() * data[:, 3] + (1 - a).sqrt() * torch.randn(1, d, generator=g)
    got = posterior_mean(x_t, data, a)
    d64, x64, a64 = data.double(), x_t.double(), a.double()
    logp = -((x64[:, None] - a64.sqrt() * d64) ** 2).sum(-1) / (2 * (1 - a64))
    w = torch.softmax(logp, -1)
    assert 0.01 < w.max() < 0.99, "the posterior should be spread for this check to bite"
    want = torch.einsum("nm,nmd->nd", w, d64)
    rel = ((got.double() - want).norm() / want.norm()).item()
    assert rel < 1e-5, rel
