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


def test_smooth_autoencoder_has_no_block_structure():
    from headgen.bench.block_edges import block_edge_ratio
    from headgen.prior.demo.autoencoder import SmoothAutoencoder

    g = torch.Generator().manual_seed(0)
    for ae in (SmoothAutoencoder(), LinearAutoencoder()):
        x = torch.rand(1, 512, 512, 3, generator=g, requires_grad=True)
        z = torch.randn(1, 4, 64, 64, generator=g)
        (ae.encode(x) * z).sum().backward()  # (a) a latent-space loss pulled back to pixels
        grad = block_edge_ratio(x.grad[0].permute(2, 0, 1))
        decoded = block_edge_ratio(ae.decode(0.3 * torch.randn(1, 4, 64, 64, generator=g))[0].permute(2, 0, 1))  # (b)
        if ae.kind == "smooth":
            assert max(grad) < 1.5 and max(decoded) < 1.5, (grad, decoded)
        else:  # the block autoencoder: nothing changes inside a block
            assert min(grad) > 1e3 and min(decoded) > 1e3, (grad, decoded)


def test_smooth_autoencoder_inverse_and_data_encoding():
    from headgen.prior.demo.autoencoder import SmoothAutoencoder, tent_matrix

    ae = SmoothAutoencoder()
    a = tent_matrix(8, 8)
    assert a.shape == (8, 64) and torch.allclose(a.sum(1), torch.ones(8))
    assert (a[3] > 0).sum() == 16  # overlapping windows: 2 x 8 pixels per output, 8 shared per neighbour
    z = ae.encode(torch.rand(2, 64, 64, 3))
    assert z.shape == (2, 4, 8, 8)
    assert torch.allclose(ae.encode(ae.decode(z)), z, atol=1e-4)  # z is in the channel map's range
    # encode_data at factor 8 is encode (the demo data use lower factors on smaller renders).
    img = torch.rand(1, 64, 64, 3)
    assert torch.allclose(ae.encode_data(img, 8), ae.encode(img))


def test_smooth_autoencoder_reconstructs_a_render_at_least_as_well_as_block():
    from headgen.cameras import Cameras
    from headgen.config import parse
    from headgen.heads.builtin import BuiltinHead
    from headgen.prior.demo.autoencoder import SmoothAutoencoder
    from headgen.prior.demo.world import DemoSettings, DemoWorld

    head = BuiltinHead(parse(BuiltinHead.Config, {})).load()
    world = DemoWorld(head, "an old sailor with a grey beard", settings=DemoSettings(supersample=1))
    az, el = torch.tensor([0.0, 60.0, 180.0]), torch.tensor([10.0, 0.0, -5.0])
    cams = Cameras.from_spherical(el, az, torch.full_like(az, 3.0), torch.full_like(az, 40.0), 512)
    img = world.images(world.target, cams, "rgb", 512)[:, 0]

    def psnr(ae) -> float:
        return float(-10 * torch.log10(((ae.decode(ae.encode(img)) - img) ** 2).mean()))

    smooth, block = psnr(SmoothAutoencoder()), psnr(LinearAutoencoder())
    assert smooth >= block, (smooth, block)  # measured: 27.3 vs 26.5 dB
