"""The DreamFace parametric mesh on the built-in head."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from headgen.config import build, parse
from headgen.errors import ConfigError
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig


@pytest.fixture(scope="module")
def ctx():
    head = build("head", {"type": "builtin"}).load()
    return SimpleNamespace(head=head, device=torch.device("cpu"))


def make(ctx, **kw):
    return ParametricMesh(parse(ParametricMeshConfig, {"normal_map_size": 32, "texture_size": 32, **kw}), ctx)


def test_identity_displacement_and_expression(ctx):
    rep = make(ctx, num_identity=10)
    v0 = rep.vertices().detach().clone()
    assert torch.allclose(v0, ctx.head.v_template, atol=1e-6)
    beta = torch.zeros(10)
    beta[0] = 1.0
    rep.set_identity(beta)
    assert torch.allclose(rep.vertices(), ctx.head.vertices(beta), atol=1e-5)
    with torch.no_grad():
        rep.displacement.fill_(0.01)
    moved = rep.vertices() - rep.coarse_vertices()
    normals = rep._coarse_mesh().vertex_normals()
    assert torch.allclose((moved * normals).sum(-1), torch.full((moved.shape[0],), 0.01), atol=1e-5)
    smile = make(ctx, expression={"mouthSmile_L": 1.0})
    delta = smile.vertices() - ctx.head.v_template
    assert delta.norm(dim=-1).max() > 1e-3
    assert delta[ctx.head.v_template[:, 0] < -0.05].norm(dim=-1).max() < 1e-4  # left smile moves +x only


def test_regularisers_and_groups(ctx):
    rep = make(ctx, num_identity=5, texture="both")
    assert set(rep.param_groups()) == {"beta", "displacement", "normal_map", "albedo", "latent"}
    assert rep.reg_shape(0).item() == 0.0 and rep.reg_laplacian(0).item() < 1e-10
    assert rep.reg_normal_map(0).item() == 0.0
    with torch.no_grad():
        rep.beta[0] = 2.0
        rep.displacement[::7] = 0.05
        rep.normal_map[4, 4] = torch.tensor([1.0, 0.0, 1.0])
    assert rep.reg_shape(0).item() == pytest.approx(4.0)
    assert rep.reg_laplacian(0).item() > 1e-6 and rep.reg_normal_map(0).item() > 1e-4
    rep.reg_laplacian(0).backward()
    assert rep.displacement.grad.abs().sum() > 0
    assert sorted(rep.regularizer_names()) == ["laplacian", "normal_map", "shape"]


def test_render_input_and_bad_config(ctx):
    rep = make(ctx, texture="latent", num_identity=3)
    geo = rep.render_input()
    assert geo.latent_map.shape == (4, 64, 64) and geo.albedo_map is None
    assert geo.normal_map.shape == (32, 32, 3) and torch.allclose(geo.normal_map[0, 0], torch.tensor([0.5, 0.5, 1.0]))
    assert make(ctx, num_identity=1000).beta.numel() == ctx.head.num_identity  # at most the head's modes
    with pytest.raises(ConfigError, match="num_identity must be >= 1"):
        make(ctx, num_identity=0)
    with pytest.raises(ConfigError, match="unknown expression 'smile'"):
        make(ctx, expression={"smile": 1.0})


def test_load_from_carries_identity_into_more_modes_and_refuses_other_size_changes(ctx):
    """A stage that rebuilds the head (DreamFace's texture-image) keeps the previous identity; a size it
    cannot hold is an error, not a silent fresh start (it used to reset the identity to the mean head)."""
    prev = make(ctx, num_identity=10)
    beta = torch.linspace(-1.0, 1.0, 10)
    prev.set_identity(beta)
    bigger = make(ctx, num_identity=20)
    bigger.load_from(prev)
    assert torch.equal(bigger.beta_star[:10], prev.beta_star) and not bigger.beta_star[10:].any()
    assert torch.allclose(bigger.vertices(), prev.vertices(), atol=1e-6)
    with pytest.raises(ConfigError, match=r"num_identity .*same values in both stages"):
        make(ctx, num_identity=5).load_from(prev)
    with pytest.raises(ConfigError, match=r"this stage's normal_map has shape \(16, 16, 3\), the previous stage's "
                                          r"\(32, 32, 3\)"):
        make(ctx, num_identity=10, normal_map_size=16).load_from(prev)


def test_expressions_transferred_onto_a_carved_head_keep_their_support_and_the_detail(ctx):
    """Issue 22: morph targets personalised to the carved head. On a displaced mesh each expression
    moves exactly the vertices the generic one moves, and the carved detail stays where the skin
    took it (the displacement along the moved surface's normals), which adding the generic deltas
    to the carved mesh does not do."""
    from headgen.geometry.mesh import Mesh

    rep = make(ctx, num_identity=4)
    with torch.no_grad():
        rep.displacement.copy_(0.01 * torch.sin(rep.v_template[:, 1] * 40))
    names, personal = rep.expression_deltas()
    generic = ctx.head.expression_basis
    assert personal.shape == generic.shape
    assert torch.equal(personal.abs().amax(-1) > 0, generic.abs().amax(-1) > 0)  # same support, every shape
    carved, coarse = rep.vertices().detach(), rep.coarse_vertices().detach()
    d = rep.displacement.detach()
    for name in ("jawOpen", "mouthSmile_L", "browInnerUp"):
        e = names.index(name)
        moved = generic[e].abs().amax(-1) > 0
        skin = coarse + generic[e]  # the expression on the coarse identity
        normals = Mesh(skin, rep.faces).vertex_normals()
        for deltas, tol in ((personal, 1e-5), (generic, None)):
            offset = (carved + deltas[e] - skin)[moved]  # the detail, relative to the moved skin
            error = (offset - d[moved, None] * normals[moved]).norm(dim=-1).max().item()
            if tol is not None:
                assert error < tol, (name, error)
            else:
                assert error > 5e-4, (name, error)  # the generic deltas leave the detail behind
    plain = make(ctx, num_identity=4, personalised_expressions=False)
    plain.load_from(rep)
    assert torch.equal(plain.expression_deltas()[1], generic)


def test_texture_mask_keeps_the_texels_under_black(ctx, tmp_path):
    import imageio.v3 as iio
    import numpy as np

    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, :32] = 255  # left half editable
    iio.imwrite(tmp_path / "mask.png", mask)
    rep = make(ctx, num_identity=4, texture="both", latent_size=8, texture_mask=str(tmp_path / "mask.png"))
    (rep.latent.sum() + rep.albedo.sum()).backward()
    assert torch.equal(rep.latent.grad[:, :, :4], torch.ones(4, 8, 4))
    assert not rep.latent.grad[:, :, 4:].any() and not rep.albedo.grad[:, 16:].any()
    assert rep.albedo.grad[:, :16].min() == 1.0
    with pytest.raises(ConfigError, match="texture_mask: cannot read"):
        make(ctx, num_identity=4, texture="both", texture_mask=str(tmp_path / "missing.png"))
