"""Seeded runs are reproducible on multi-threaded CPUs: the gathers on differentiable paths
(headgen.gather.take) back-propagate through index_add, not through index_put(accumulate=True),
whose CPU kernel adds repeated indices in a thread-dependent order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from headgen.cameras import Cameras
from headgen.config import build
from headgen.config.typed import parse
from headgen.gather import take
from headgen.render.mesh_renderer import MeshRenderer
from representations.dmtet import DMTet
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_take_equals_indexing_in_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(7, 5, 3, generator=g, requires_grad=True)
    for dim, idx in ((0, torch.randint(0, 7, (4, 6), generator=g)), (1, torch.randint(0, 5, (9,), generator=g)),
                     (-1, torch.tensor([[2, 0], [2, 2]]))):
        expected = src[idx] if dim == 0 else (src[:, idx] if dim == 1 else src[..., idx])
        got = take(src, idx, dim)
        assert got.shape == expected.shape
        assert torch.equal(got, expected)
        w = torch.randn(got.shape, generator=g)
        (ga,) = torch.autograd.grad((got * w).sum(), src)
        (gb,) = torch.autograd.grad((expected * w).sum(), src)
        assert torch.allclose(ga, gb, atol=1e-6) and ga.abs().sum() > 0


def _cameras(n: int = 2, res: int = 64) -> Cameras:
    az = torch.linspace(-50, 50, n)
    return Cameras.from_spherical(torch.full((n,), 10.0), az, torch.full((n,), 2.5), torch.full((n,), 40.0), res)


def _grads(loss_fn, params) -> list[torch.Tensor]:
    for p in params:
        p.grad = None
    loss_fn().backward()
    return [p.grad.clone() for p in params]


@pytest.mark.usefixtures("two_threads")
def test_dmtet_render_and_regulariser_gradients_are_bitwise_reproducible():
    node = {"resolution": 32, "init": "sphere", "init_radius": 0.5, "half_size": 0.75,
            "color_encoding": {"levels": 4, "log2_hashmap_size": 12, "base_resolution": 4, "max_resolution": 32}}
    dm = DMTet(parse(DMTet.Config, node), None)
    dm.ensure_initialized()
    renderer = MeshRenderer(MeshRenderer.Config(resolution=128, backend="torch"))
    cams = _cameras(2, 128)

    def loss():
        out = renderer.render(dm.render_input(), cams, modes=("rgb", "normal", "opacity"))
        return (out["rgb"].square().mean() + out["normal"].square().mean() + out["opacity"].mean()
                + dm.reg_normal_consistency(0) + dm.reg_laplacian(0))

    params = [dm.sdf, dm.deform]
    first = _grads(loss, params)
    assert all(g.abs().sum() > 0 for g in first)
    for _ in range(4):
        assert all(torch.equal(a, b) for a, b in zip(first, _grads(loss, params)))


@pytest.mark.usefixtures("two_threads")
def test_textured_mesh_render_gradients_are_bitwise_reproducible():
    head = build("head", {"type": "builtin"}).load()
    rep = ParametricMesh(parse(ParametricMeshConfig, {
        "num_identity": head.num_identity, "displacement": True, "normal_map_size": 0, "texture_size": 128,
        "init_albedo": [0.5, 0.5, 0.5]}), SimpleNamespace(head=head, device=torch.device("cpu")))
    renderer = MeshRenderer(MeshRenderer.Config(resolution=96, backend="torch"))
    cams = _cameras(3, 96)
    params = [p for p in (rep.albedo, getattr(rep, "displacement", None)) if isinstance(p, torch.Tensor)]

    def loss():
        return renderer.render(rep.render_input(), cams, modes=("rgb",))["rgb"].square().mean()

    first = _grads(loss, params)
    assert len(params) == 2 and all(g.abs().sum() > 0 for g in first)
    for _ in range(4):
        assert all(torch.equal(a, b) for a, b in zip(first, _grads(loss, params)))
