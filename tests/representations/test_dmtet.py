import math
from types import SimpleNamespace

import pytest
import torch

from headgen.cameras import Cameras
from headgen.config import build
from headgen.config.typed import parse
from headgen.errors import ConfigError, HeadgenError
from headgen.geometry.marching_tets import is_watertight
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.geometry.sdf import MeshSDF, point_triangle_distance2
from headgen.geometry.unwrap import bake_field, bake_vertex_attribute, unwrap
from headgen.registry import lookup
from headgen.render.mesh_renderer import MeshRenderer
from headgen.stages.results import load_result, save_result
from representations.dmtet import DMTet, mean_surface_distance

SMALL_HASH = {"levels": 6, "log2_hashmap_size": 12, "base_resolution": 4, "max_resolution": 64}



def make(ctx=None, **kw) -> DMTet:
    node = {"color_encoding": SMALL_HASH, "geometry_encoding": SMALL_HASH, **kw}
    return DMTet(parse(DMTet.Config, node), ctx)


@pytest.fixture(scope="module")
def head():
    return build("head", {"type": "builtin"}).load()


@pytest.fixture(scope="module")
def head_fit(head):
    dm = make(SimpleNamespace(head=head), resolution=64, init="head")
    dm.ensure_initialized()
    return dm


def test_registered_and_parameter_groups_per_mode():
    assert lookup("representation", "dmtet") is DMTet
    full = make(resolution=8)
    groups = full.param_groups()
    assert list(groups) == ["sdf", "deformation", "color"]
    assert groups["sdf"][0].shape == (9**3,) and groups["deformation"][0].shape == (9**3, 3)
    assert list(make(resolution=8, mode="fix-geometry").param_groups()) == ["color"]
    off = make(resolution=8, mode="offsets-only")
    assert list(off.param_groups()) == ["deformation", "color"]
    assert not off.sdf.requires_grad and off.deform.requires_grad
    hg = make(resolution=8, geometry="hashgrid")
    assert list(hg.param_groups()) == ["sdf", "deformation", "color"]
    assert hg.param_groups()["sdf"][0] is hg.sdf_net.encoding.params
    assert list(make(resolution=8, deformation=False).param_groups()) == ["sdf", "color"]
    with pytest.raises(ConfigError, match="offsets-only needs deformation"):
        make(resolution=8, mode="offsets-only", deformation=False)


def test_head_fit_is_within_one_percent_of_head_size(head, head_fit):
    mesh = head_fit.extract_mesh()
    assert is_watertight(mesh.t_pos_idx)
    # The box was placed around the head mesh.
    v = torch.as_tensor(head.v_template)
    lo = head_fit.box_center - head_fit.box_half
    hi = head_fit.box_center + head_fit.box_half
    assert (v.min(0).values > lo).all() and (v.max(0).values < hi).all()
    msd = mean_surface_distance(mesh, head.v_template, head.faces, samples=20000)
    size = float(head.scale)  # head height, chin to crown (1 unit for the built-in head)
    assert msd < 0.01 * size
    assert msd < 0.002 * size  # measured ~0.0004 at grid 64


def test_hashgrid_geometry_fits_the_head(head):
    dm = make(
        SimpleNamespace(head=head),
        resolution=32,
        init="head",
        geometry="hashgrid",
        init_steps=150,
        geometry_encoding={"levels": 8, "log2_hashmap_size": 14, "base_resolution": 8, "max_resolution": 256},
    )
    dm.ensure_initialized()
    msd = mean_surface_distance(dm.extract_mesh(), head.v_template, head.faces, samples=10000)
    assert msd < 0.01 * float(head.scale)


def sphere_dmtet(**kw) -> DMTet:
    dm = make(resolution=kw.pop("resolution", 16), init="sphere", init_radius=0.5, half_size=0.75, **kw)
    dm.ensure_initialized()
    return dm


def cams(n=2, res=32):
    az = torch.linspace(-60, 60, n)
    return Cameras.from_spherical(torch.zeros(n), az, torch.full((n,), 2.5), torch.full((n,), 40.0), res)


def test_render_input_and_gradients_reach_every_group():
    dm = sphere_dmtet()
    geo = dm.render_input()
    assert isinstance(geo, SurfaceGeometry) and geo.albedo_fn is not None
    assert (geo.mesh.v_pos.norm(dim=-1) - 0.5).abs().max() < 0.02
    renderer = MeshRenderer(MeshRenderer.Config(resolution=32, backend="torch"))
    out = renderer.render(geo, cams(), modes=("rgb", "opacity"))
    assert out["opacity"].mean() > 0.05
    loss = out["rgb"].mean() + out["opacity"].mean()
    loss.backward()
    for name, params in dm.param_groups().items():
        grads = [p.grad for p in params if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, name
    # The backward freed the graph: the next call extracts again instead of reusing it.
    assert dm.extract_mesh().v_pos is not geo.mesh.v_pos


def test_fix_geometry_reuses_the_mesh_while_colour_trains():
    dm = sphere_dmtet(mode="fix-geometry")
    first = dm.render_input()
    assert not first.mesh.v_pos.requires_grad
    opt = torch.optim.Adam(dm.param_groups()["color"], lr=1e-2)
    loss = first.albedo_fn(first.mesh.v_pos).mean()
    loss.backward()
    opt.step()
    assert dm.render_input().mesh.v_pos is first.mesh.v_pos  # no re-extraction
    # offsets-only: the SDF gets no gradient, the offsets do.
    off = sphere_dmtet(mode="offsets-only")
    off.extract_mesh().v_pos.square().sum().backward()
    assert off.sdf.grad is None
    assert off.deform.grad is not None and off.deform.grad.abs().sum() > 0


def test_regularisers():
    dm = sphere_dmtet(resolution=24)
    smooth = {
        n: float(dm.regularizer(n, 0).detach()) for n in ("normal_consistency", "laplacian", "sdf_sign")
    }
    assert 0 < smooth["normal_consistency"] < 0.02
    assert smooth["laplacian"] > 0
    noisy = sphere_dmtet(resolution=24)
    with torch.no_grad():
        noisy.sdf.add_(torch.randn(noisy.sdf.shape, generator=torch.Generator().manual_seed(0)) * 0.02)
    rough = float(noisy.regularizer("normal_consistency", 0).detach())
    assert rough > 3 * smooth["normal_consistency"]
    assert float(noisy.regularizer("laplacian", 0).detach()) > smooth["laplacian"]
    reg = dm.regularizer("sdf_sign", 0)
    reg.backward()
    assert dm.sdf.grad is not None and dm.sdf.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="no regulariser 'laplace'.*laplacian"):
        dm.regularizer("laplace", 0)


@pytest.mark.parametrize("method", ["normal-charts", "xatlas"])
def test_unwrap_and_bake_reproduce_a_field(method):
    dm = sphere_dmtet(resolution=16)
    mesh = unwrap(Mesh(dm.extract_mesh().v_pos.detach(), dm.extract_mesh().t_pos_idx), method=method)
    assert mesh.v_tex is not None and mesh.t_tex_idx.shape == mesh.t_pos_idx.shape
    assert mesh.v_tex.min() >= 0 and mesh.v_tex.max() <= 1

    def field(x):
        return (x + 1.0) * 0.5

    size = 256
    tex = bake_field(mesh, field, size)
    assert tex.shape == (size, size, 3)
    # Look the texture up at each face's UV centroid (row 0 = v = 1) and compare with the field
    # at the face's 3D centroid: the field is linear, so they agree up to texel quantisation.
    uv = mesh.v_tex[mesh.t_tex_idx].mean(1)
    col = (uv[:, 0] * size).long().clamp(0, size - 1)
    row = ((1 - uv[:, 1]) * size).long().clamp(0, size - 1)
    got = tex[row, col]
    want = field(mesh.v_pos[mesh.t_pos_idx].mean(1))
    assert (got - want).abs().mean() < 0.01
    # Per-vertex attributes bake the same way.
    tex_v = bake_vertex_attribute(mesh, field(mesh.v_pos), size)
    assert (tex_v[row, col] - want).abs().mean() < 0.01


def test_export_mesh():
    dm = sphere_dmtet(resolution=12)
    mesh, tex = dm.export_mesh(texture_size=64)
    assert mesh.has_uv and tex.shape == (64, 64, 3)
    assert 0.0 <= float(tex.min()) and float(tex.max()) <= 1.0
    assert is_watertight(mesh.t_pos_idx)


def test_export_mesh_unwraps_once_until_the_head_changes(monkeypatch):
    import representations.dmtet as dmtet_module

    calls = []
    real = dmtet_module.textured_mesh
    monkeypatch.setattr(dmtet_module, "textured_mesh", lambda *a, **k: calls.append(1) or real(*a, **k))
    dm = sphere_dmtet(resolution=10)
    first = dm.export_surface()
    assert dm.export_surface().mesh is first.mesh and len(calls) == 1  # obj, glb, preview share one
    dm.export_mesh(texture_size=32)
    assert len(calls) == 2  # another texture size
    with torch.no_grad():
        next(dm.color_net.parameters()).add_(0.5)
    colour = dm.export_surface()
    assert len(calls) == 3 and not torch.equal(colour.albedo_map, first.albedo_map)
    with torch.no_grad():
        dm.deform.normal_(0, 0.3)
    moved = dm.export_surface()
    assert len(calls) == 4 and not torch.equal(moved.mesh.v_pos, first.mesh.v_pos)
    dm.load_state_dict(dm.state_dict())
    dm.export_surface()
    assert len(calls) == 5


def test_match_previous_takes_the_previous_sizes_and_keeps_its_mode():
    source = sphere_dmtet(resolution=10)
    with torch.no_grad():
        source.deform.normal_(0, 0.3)
    before = source.extract_mesh().v_pos.detach().clone()
    edit = make(resolution=24, init="none", match_previous=True, mode="offsets-only",
                color_encoding={**SMALL_HASH, "levels": 2}, export_texture_size=64)
    edit.load_from(source)
    assert edit.cfg.resolution == 10 and edit.cfg.color_encoding == source.cfg.color_encoding
    assert edit.cfg.mode == "offsets-only" and edit.cfg.export_texture_size == 64
    torch.testing.assert_close(edit.extract_mesh().v_pos, before)  # the same surface, not resampled
    assert set(edit.param_groups()) == {"deformation", "color"}
    assert not edit.sdf.requires_grad and edit.deform.requires_grad
    assert edit.sdf.data_ptr() != source.sdf.data_ptr()  # a copy: training it leaves the source alone
    no_offsets = make(resolution=10, deformation=False, init="sphere")
    with pytest.raises(ConfigError, match="offsets-only needs deformation"):
        make(resolution=10, match_previous=True, mode="offsets-only").load_from(no_offsets)


def test_saved_result_reloads_without_refitting(tmp_path, monkeypatch):
    dm = sphere_dmtet(resolution=12)
    with torch.no_grad():
        dm.deform.normal_(0, 0.3)
    before = dm.extract_mesh().v_pos.detach().clone()
    save_result(tmp_path, dm, None)

    def no_refit(*a, **k):
        raise AssertionError("a loaded result must not be re-initialised")

    monkeypatch.setattr(DMTet, "fit_sdf", no_refit)
    loaded = load_result(tmp_path, SimpleNamespace(device=torch.device("cpu")), None)
    assert isinstance(loaded, DMTet)
    torch.testing.assert_close(loaded.extract_mesh().v_pos, before)
    again = make(resolution=12, init="sphere", init_radius=0.5, half_size=0.75)
    again.load_from(loaded)
    torch.testing.assert_close(again.extract_mesh().v_pos, before)


def test_load_from_another_resolution_resamples():
    coarse = sphere_dmtet(resolution=16)
    fine = make(resolution=24, init="none")
    fine.load_from(coarse)
    v = fine.extract_mesh().v_pos
    assert (v.norm(dim=-1) - 0.5).abs().max() < 0.02
    with pytest.raises(ConfigError, match="cannot start a hashgrid"):
        make(resolution=24, geometry="hashgrid", init="none").load_from(coarse)


def test_head_init_without_head_is_a_clear_error():
    dm = make(resolution=8, init="head")
    with pytest.raises(HeadgenError, match="head model"):
        dm.extract_mesh()


def test_mesh_sdf_is_exact_near_the_head_surface(head):
    sdf = MeshSDF(head.v_template, head.faces)
    gen = torch.Generator().manual_seed(0)
    v = torch.as_tensor(head.v_template, dtype=torch.float64)
    pts = (
        v[torch.randint(0, len(v), (100,), generator=gen)]
        + torch.randn(100, 3, generator=gen, dtype=torch.float64) * 0.02
    )
    tri = sdf.tri32
    brute = point_triangle_distance2(pts.float()[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
    brute = brute.min(-1).values.sqrt()
    got = sdf(pts, band=0.1)
    torch.testing.assert_close(got.abs(), brute, atol=1e-5, rtol=1e-4)
    # Signs: points pushed along the outward vertex normal are outside, pushed inward inside.
    n = Mesh(v, torch.as_tensor(head.faces)).vertex_normals()
    idx = torch.randint(0, len(v), (300,), generator=gen)
    assert (sdf(v[idx] + 0.003 * n[idx]) > 0).float().mean() > 0.97
    assert (sdf(v[idx] - 0.003 * n[idx]) < 0).float().mean() > 0.97
    assert float(sdf(torch.tensor([[0.0, 0.0, 0.0]]))) < -0.05  # the middle of the head
    assert float(sdf(torch.tensor([[0.0, 0.0, 0.9]]))) > 0.3
    with pytest.raises(HeadgenError, match="closed mesh"):
        MeshSDF(head.v_template, head.faces[1:])
    assert math.isfinite(sdf.radius)


def test_cap_holes_closes_an_open_head_for_its_signed_distance():
    import numpy as np
    import trimesh

    from headgen.geometry.sdf import cap_holes
    from representations.dmtet import head_mesh_arrays

    box = trimesh.creation.box()
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    assert cap_holes(v, f)[1].shape == f.shape  # closed: unchanged
    open_f = f[np.asarray(box.face_normals)[:, 2] < 0.5]  # the top side (+z) removed: a square hole
    with pytest.raises(HeadgenError, match="closed mesh"):
        MeshSDF(v, open_f)
    cv, cf = cap_holes(v, open_f)
    assert len(cv) == len(v) + 1 and len(cf) == len(open_f) + 4
    sdf = MeshSDF(cv, cf)(torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 2.0]], dtype=torch.float64), band=10.0)
    assert sdf[0] == pytest.approx(-0.4, abs=1e-6) and sdf[1] == pytest.approx(1.5, abs=1e-6)  # the cap at z=0.5
    # ICT-FaceKit's skin is open under the neck: the head's arrays come capped
    from headgen.heads.ict import load_ict_facekit

    head = load_ict_facekit(num_identity=0)
    hv, hf = head_mesh_arrays(head)
    assert len(hf) == head.num_faces + 54 and MeshSDF(hv, hf)(torch.zeros(1, 3, dtype=torch.float64))[0] < 0
