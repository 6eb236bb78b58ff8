from types import SimpleNamespace

import pytest
import torch

from converters.nerf_to_dmtet import NeRFToDMTet
from headgen.cameras import Cameras
from headgen.config import build
from headgen.config.typed import parse
from headgen.errors import ConfigError, HeadgenError
from headgen.geometry.marching_tets import is_watertight
from headgen.geometry.mesh import Mesh
from headgen.registry import lookup
from headgen.render.mesh_renderer import MeshRenderer
from headgen.render.volume import RadianceField, VolumeRenderer
from representations.dmtet import DMTet
from representations.nerf import NeRF

SMALL_HASH = {"levels": 6, "log2_hashmap_size": 12, "base_resolution": 4, "max_resolution": 64}
RES = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def make(ctx=None, **kw) -> NeRF:
    node = {"density_encoding": SMALL_HASH, "color_encoding": SMALL_HASH, "prior_resolution": 64, **kw}
    return NeRF(parse(NeRF.Config, node), ctx)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a & b).sum((1, 2)).float() / (a | b).sum((1, 2)).float()


@pytest.fixture(scope="module")
def head():
    return build("head", {"type": "builtin"}).load()


@pytest.fixture(scope="module")
def cameras():
    az = torch.tensor([0.0, 90.0, -135.0])
    el = torch.tensor([0.0, 10.0, 30.0])
    return Cameras.from_spherical(el, az, torch.full_like(az, 2.8), torch.full_like(az, 40.0), RES)


@pytest.fixture(scope="module")
def head_nerf(head):
    torch.manual_seed(0)
    nerf = make(SimpleNamespace(head=head), density_prior="head")
    nerf.ensure_initialized()
    return nerf


@pytest.fixture(scope="module")
def silhouettes(head, head_nerf, cameras):
    """(NeRF opacity > 0.5 at step 0, the head mesh's silhouette), [B,H,W] bool each."""
    renderer = VolumeRenderer(parse(VolumeRenderer.Config, {"num_samples": 64}))
    with torch.no_grad():
        opacity = renderer.render(head_nerf, cameras, modes=("opacity",))["opacity"][..., 0]
    mesh = Mesh(torch.as_tensor(head.v_template), torch.as_tensor(head.faces))
    return opacity > 0.5, mesh_silhouette(mesh, cameras)


def mesh_silhouette(mesh: Mesh, cameras: Cameras) -> torch.Tensor:
    renderer = MeshRenderer(MeshRenderer.Config(resolution=RES, backend="torch", antialias=False))
    with torch.no_grad():
        return renderer.render(mesh, cameras, modes=("opacity",))["opacity"][..., 0] > 0.5


def test_registered_protocol_and_groups():
    assert lookup("representation", "nerf") is NeRF
    assert lookup("converter", "nerf-to-dmtet") is NeRFToDMTet
    nerf = make(density_prior="none")
    assert isinstance(nerf, RadianceField) and nerf.render_input() is nerf
    x = torch.rand(50, 3) * 2 - 1
    sigma, rgb = nerf.density_and_color(x)
    assert sigma.shape == (50,) and rgb.shape == (50, 3)
    assert (sigma >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()
    groups = nerf.param_groups()
    assert list(groups) == ["geometry", "color"]
    assert groups["geometry"][0] is nerf.density_net.encoding.params
    # Zero density outside the cube; a latent field has 4 unbounded channels.
    assert float(nerf.density(torch.tensor([[1.2, 0.0, 0.0]])).detach()) == 0.0
    latent = make(density_prior="none", color_channels=4, color_activation="none")
    assert latent.color(x).shape == (50, 4)


def test_head_prior_renders_the_head_silhouette_at_step_0(silhouettes):
    nerf_sil, mesh_sil = silhouettes
    assert mesh_sil.float().mean() > 0.05  # the head is in view
    scores = iou(nerf_sil, mesh_sil)
    assert (scores > 0.9).all(), scores.tolist()


def test_head_prior_shape_and_normals(head_nerf, head):
    v = torch.as_tensor(head.v_template)
    inside = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0]])
    outside = torch.tensor([[0.0, 0.0, 0.8], [0.7, 0.0, 0.0]])
    assert (head_nerf.density(inside) > 8.0).all()
    assert (head_nerf.density(outside) < 1e-3).all()
    # Normals from the density gradient point outward at the surface (compare with mesh normals).
    idx = torch.arange(0, len(v), 97)
    n_mesh = Mesh(v, torch.as_tensor(head.faces)).vertex_normals()[idx]
    n_field = head_nerf.normal(v[idx])
    assert ((n_mesh * n_field).sum(-1) > 0.5).float().mean() > 0.9
    # Gradients through the normals reach the density network (double backward).
    x = v[idx].clone()
    head_nerf.normal(x).sum().backward()
    assert head_nerf.density_net.encoding.params.grad is not None


def test_sphere_prior_and_exp_activation():
    nerf = make(density_prior="sphere", prior_radius=0.5, prior_strength=5.0, density_activation="exp")
    x = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.9, 0.0]])
    with torch.no_grad():
        torch.testing.assert_close(nerf.prior(x), torch.tensor([5.0, 5.0 * (1 - 0.9 / 0.5)]))
        torch.testing.assert_close(nerf.density(x), torch.exp(nerf.raw_density(x)))
        assert float(nerf.density(x)[1]) < 0.1
    p = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0]])
    torch.testing.assert_close(nerf.normal(p), p / 0.5, atol=1e-3, rtol=0)


def test_head_prior_needs_a_head():
    nerf = make(density_prior="head")
    with pytest.raises(HeadgenError, match="head model"):
        nerf.density(torch.zeros(1, 3))


def test_conversion_keeps_the_silhouette(head_nerf, silhouettes, cameras):
    nerf_sil, mesh_sil = silhouettes
    conv = NeRFToDMTet(
        parse(
            NeRFToDMTet.Config,
            {
                "dmtet": {"resolution": 40, "color_encoding": SMALL_HASH},
                "color": "fresh",
                "probe_resolution": 48,
            },
        )
    )
    dm = conv.convert(head_nerf)
    assert isinstance(dm, DMTet) and bool(dm.initialized)
    mesh = dm.extract_mesh()
    assert is_watertight(mesh.t_pos_idx)
    scores = iou(mesh_silhouette(mesh, cameras), nerf_sil)
    assert (scores > 0.9).all(), scores.tolist()
    # A proper SDF scale after redistancing: |grad| ~ 1 across the surface.
    v = dm.grid_vertices()
    sdf = dm.vertex_sdf().detach()
    assert float(sdf.min()) < -0.1 and float(sdf.max()) > 0.1
    assert v.shape[0] == sdf.shape[0]


def test_conversion_distills_colour():
    nerf = make(density_prior="sphere", prior_radius=0.5, prior_strength=10.0)

    def colour(x):  # a known, smooth colour field
        return torch.sigmoid(3.0 * x)

    nerf.color = colour  # the converter reads the NeRF colour through this method
    conv = NeRFToDMTet(
        parse(
            NeRFToDMTet.Config,
            {
                "dmtet": {"resolution": 24, "color_encoding": SMALL_HASH},
                "distill_steps": 150,
                "distill_points": 2048,
                "probe_resolution": 32,
            },
        )
    )
    dm = conv.convert(nerf)
    pts = dm.extract_mesh().v_pos.detach()
    with torch.no_grad():
        err = (dm.albedo(pts) - colour(pts)).abs().mean()
    assert err < 0.03, float(err)
    with pytest.raises(ConfigError, match="converts a nerf"):
        conv.convert(dm)
    with pytest.raises(ConfigError, match="geometry: direct"):
        NeRFToDMTet(parse(NeRFToDMTet.Config, {"sdf": "density", "dmtet": {"geometry": "hashgrid"}}))


def test_density_sdf_mode_and_export():
    nerf = make(density_prior="sphere", prior_radius=0.5)
    conv = NeRFToDMTet(
        parse(
            NeRFToDMTet.Config,
            {
                "dmtet": {"resolution": 20, "color_encoding": SMALL_HASH},
                "sdf": "density",
                "color": "fresh",
                "probe_resolution": 32,
            },
        )
    )
    dm = conv.convert(nerf)
    r = dm.extract_mesh().v_pos.norm(dim=-1)
    # softplus(10 (1 - r / 0.5)) = 5 at r = 0.5 * (1 - 0.4993...) ~ 0.2503: the density threshold surface.
    assert (r - 0.2503).abs().max() < 0.02
    mesh, tex = nerf.export_mesh(texture_size=32, resolution=24)
    assert mesh.has_uv and tex.shape == (32, 32, 3)
    with pytest.raises(HeadgenError, match="lower the threshold"):
        nerf.extract_mesh(resolution=8, threshold=1e6)


def test_prior_aligned_to_the_threshold_surface(head):
    """prior_align_threshold shifts the transition so the head mesh's surface is the mesh_threshold surface
    (without it the prior is 0 there: density act(0))."""
    import math

    ctx = SimpleNamespace(head=head)
    v = torch.as_tensor(head.v_template).float()
    faces = torch.as_tensor(head.faces)
    n = Mesh(v, faces).vertex_normals()
    idx = torch.arange(0, len(v), 53)
    raw = 5.0 + math.log(-math.expm1(-5.0))  # softplus^-1(5)
    aligned = make(ctx, density_prior="head", prior_width=0.05, prior_align_threshold=True)
    with torch.no_grad():
        on_surface = aligned.prior(v[idx])
        assert (on_surface - raw).abs().median() < 0.3, on_surface
        # The transition is shifted outward by width * atanh(raw / strength) = 0.05 * 0.547.
        assert abs(aligned.prior_shift - 0.05 * math.atanh(raw / 10.0)) < 1e-9
        out = v[idx] + 0.2 * n[idx]
        assert (aligned.prior(out) < -9.0).float().mean() > 0.9  # still empty away from the head
    mesh = aligned.extract_mesh(resolution=48)
    assert (mesh.v_pos.norm(dim=-1).max() - v.norm(dim=-1).max()).abs() < 0.05
    with pytest.raises(ConfigError, match="never reaches density mesh_threshold"):
        make(ctx, density_prior="head", prior_strength=4.0, prior_align_threshold=True)


def test_demo_metrics_score_the_threshold_surface(head):
    """Under the demo prior a NeRF reports the ground-truth scores of its threshold surface; otherwise none."""
    from headgen.prior.demo.world import DemoSettings, DemoWorld

    nerf = make(SimpleNamespace(head=head), density_prior="head", prior_width=0.03, prior_align_threshold=True,
                export_resolution=40)
    assert nerf.metrics(None) == {} and nerf.metrics(SimpleNamespace(state={})) == {}
    world = DemoWorld(head, "a bald man", settings=DemoSettings(bank_size=0))
    scores = nerf.metrics(SimpleNamespace(state={"demo_world": world}))
    assert set(scores) == {"psnr", "silhouette_iou", "geometry_error"}
    # The head prior is the head model's template; the target is another identity of the same model.
    assert 0.9 < scores["silhouette_iou"] < 1.0 and scores["geometry_error"] < 0.03
    assert 8.0 < scores["psnr"] < 30.0
    empty = make(SimpleNamespace(head=head), density_prior="none", density_bias=-20.0, export_resolution=16)
    assert empty.metrics(SimpleNamespace(state={"demo_world": world})) == {"silhouette_iou": 0.0}
