import math

import pytest
import torch

from headgen.cameras import Cameras, Lights, fov_to_focal, pixel_rays
from headgen.config.typed import parse
from headgen.errors import HeadgenError
from headgen.registry import lookup
from headgen.render.volume import RadianceField, VolumeRenderer

DIST = 3.0
FOVY = 40.0
RADIUS = 0.5


class AnalyticField(torch.nn.Module):
    """A ball of radius ``radius`` at ``center`` with density ``scale * relu(radius - |x - center|)``
    (steep, and its gradient points inward everywhere inside, so normals are defined at every
    sample) and a constant colour; ``scale`` and ``albedo`` are learnable to check gradients."""

    def __init__(self, radius=RADIUS, scale=1e5, albedo=(0.8, 0.4, 0.2), center=(0.0, 0.0, 0.0)):
        super().__init__()
        self.radius = radius
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(scale)))
        self.albedo = torch.nn.Parameter(torch.tensor(albedo))
        self.register_buffer("center", torch.tensor(center))

    def density(self, x):
        return self.log_scale.exp() * torch.relu(self.radius - (x - self.center).norm(dim=-1))

    def color(self, x):
        return self.albedo.expand(x.shape[0], 3)


def cams(azimuth=(0.0,), res=64, elevation=None):
    az = torch.tensor(azimuth)
    el = torch.zeros_like(az) if elevation is None else torch.tensor(elevation)
    return Cameras.from_spherical(el, az, torch.full_like(az, DIST), torch.full_like(az, FOVY), res)


def renderer(**kw) -> VolumeRenderer:
    return VolumeRenderer(parse(VolumeRenderer.Config, {"num_samples": 96, **kw}))


def expected_radius_px(res: int) -> float:
    # Silhouette of a sphere: a cone of half-angle asin(r/d) around the view axis.
    focal = float(fov_to_focal(torch.tensor(math.radians(FOVY)), res))
    return focal * math.tan(math.asin(RADIUS / DIST))


def test_registered_and_protocol():
    assert lookup("renderer", "volume") is VolumeRenderer
    assert isinstance(AnalyticField(), RadianceField)


def test_sphere_silhouette_depth_and_normals():
    res = 64
    field = AnalyticField()
    with torch.no_grad():
        out = renderer().render(field, cams(res=res))
    assert set(out) == {"rgb", "opacity", "depth", "normal"}
    assert out["rgb"].shape == (1, res, res, 3) and out["opacity"].shape == (1, res, res, 1)
    assert out["depth"].shape == (1, res, res, 1) and out["normal"].shape == (1, res, res, 3)
    opacity = out["opacity"][0, ..., 0]
    assert opacity.min() >= 0 and opacity.max() <= 1 + 1e-5
    area = float((opacity > 0.5).sum())
    measured = math.sqrt(area / math.pi)
    assert abs(measured - expected_radius_px(res)) < 0.5, (measured, expected_radius_px(res))
    # Disk centred on the image: pixel-centre rays are symmetric about the optical axis.
    rows, cols = (opacity > 0.5).nonzero().float().unbind(1)
    assert abs(rows.mean() - (res - 1) / 2) < 0.2 and abs(cols.mean() - (res - 1) / 2) < 0.2
    c = res // 2
    centre = out["depth"][0, c - 1 : c + 1, c - 1 : c + 1, 0]
    assert torch.allclose(centre, torch.full_like(centre, DIST - RADIUS), atol=0.03)
    n = out["normal"][0, c, c]
    assert n[2] > 0.99  # toward the camera at +z
    # Off centre the normal is the analytic sphere normal where the pixel's ray enters the ball.
    origins, dirs = pixel_rays(cams(res=res), res, res)
    row, col = c, c + res // 6
    o, d = origins[0, row, col], dirs[0, row, col]
    b = (o * d).sum()
    t_hit = -b - torch.sqrt(b**2 - (o * o).sum() + RADIUS**2)
    expected = torch.nn.functional.normalize(o + t_hit * d, dim=0)
    assert (out["normal"][0, row, col] @ expected) > 0.99
    corner = out["opacity"][0, 0, 0, 0]
    assert corner < 1e-6 and out["depth"][0, 0, 0, 0] == 0
    # Interior rgb is the albedo; the black background stays black.
    assert torch.allclose(out["rgb"][0, c, c], torch.tensor([0.8, 0.4, 0.2]), atol=1e-3)
    assert out["rgb"][0, 0, 0].abs().max() < 1e-6


def test_side_camera_normal_and_offset_sphere():
    field = AnalyticField(center=(0.2, 0.0, 0.0), radius=0.3)
    with torch.no_grad():
        out = renderer().render(field, cams((90.0,), res=48), modes=("opacity", "normal"))
    assert set(out) == {"opacity", "normal"}
    opacity = out["opacity"][0, ..., 0]
    # Camera on +x looking at the origin: the sphere sits at the centre of the view.
    hit = (opacity > 0.5).nonzero().float()
    assert abs(hit[:, 0].mean() - 23.5) < 0.3 and abs(hit[:, 1].mean() - 23.5) < 0.3
    assert out["normal"][0, 24, 24, 0] > 0.98  # normal points to +x, toward the camera


def test_gradients_reach_field_parameters():
    field = AnalyticField(scale=5.0)  # semi-transparent, so every sample matters
    out = renderer(num_samples=32, shading="lambert").render(
        field, cams(res=16), modes=("rgb", "opacity", "normal"), generator=torch.Generator().manual_seed(0)
    )
    loss = out["rgb"].sum() + out["opacity"].sum() + out["normal"][..., 2].sum()
    loss.backward()
    assert field.log_scale.grad is not None and field.log_scale.grad.abs() > 0
    assert field.albedo.grad is not None and field.albedo.grad.abs().sum() > 0


def test_deterministic_without_generator_and_chunk_invariant():
    field = AnalyticField()
    cam = cams((0.0, 60.0), res=24)
    with torch.no_grad():
        a = renderer(chunk_size=100000).render(field, cam)
        b = renderer(chunk_size=37).render(field, cam)
        g1 = renderer().render(field, cam, generator=torch.Generator().manual_seed(3))
        g2 = renderer().render(field, cam, generator=torch.Generator().manual_seed(3))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
        assert torch.equal(g1[k], g2[k]), k
    assert not torch.equal(a["depth"], g1["depth"])  # jitter changes the samples
    assert (a["opacity"] - g1["opacity"]).abs().mean() < 0.02


def test_importance_sampling_sharpens_depth():
    field = AnalyticField()
    cam = cams(res=16)
    with torch.no_grad():
        coarse = renderer(num_samples=8).render(field, cam, modes=("depth",))["depth"][0, 8, 8, 0]
        fine = renderer(num_samples=8, num_importance=64).render(field, cam, modes=("depth",))
        fine_g = renderer(num_samples=8, num_importance=64).render(
            field, cam, modes=("depth",), generator=torch.Generator().manual_seed(0)
        )
    target = DIST - RADIUS
    assert abs(fine["depth"][0, 8, 8, 0] - target) < 0.02
    assert abs(fine_g["depth"][0, 8, 8, 0] - target) < 0.02
    assert abs(fine["depth"][0, 8, 8, 0] - target) < abs(coarse - target)


def test_backgrounds_and_lambert_shading():
    field = AnalyticField()
    cam = cams(res=16)
    with torch.no_grad():
        white = renderer(background="white").render(field, cam, modes=("rgb",))["rgb"]
        assert torch.allclose(white[0, 0, 0], torch.ones(3))
        rnd = renderer(background="random")
        r1 = rnd.render(field, cam, modes=("rgb",), generator=torch.Generator().manual_seed(1))["rgb"]
        bg = r1[0, 0, 0]
        assert (bg - bg[0]).abs().max() > 0 or bg[0] not in (0.0, 1.0)
        ev = rnd.render(field, cam, modes=("rgb",))["rgb"]  # no generator: eval_background (white)
        assert torch.allclose(ev[0, 0, 0], torch.ones(3))
        lights = Lights.headlight(cam, strength=0.6, ambient=0.2)
        shaded = renderer(shading="lambert").render(field, cam, lights, modes=("rgb",))["rgb"]
    albedo = torch.tensor([0.8, 0.4, 0.2])
    # Head-on at the disk centre n.l = 1: colour = albedo * (ambient + strength).
    assert torch.allclose(shaded[0, 8, 8], albedo * 0.8, atol=0.01)
    # Toward the rim the surface turns away from the headlight and gets darker.
    assert shaded[0, 8, 11].sum() < shaded[0, 8, 8].sum()


def test_near_far_without_bounding_sphere_and_resolution_override():
    field = AnalyticField()
    r = renderer(bound_radius=None, near=2.0, far=4.0, resolution=20)
    with torch.no_grad():
        out = r.render(field, cams(res=64), modes=("opacity", "depth"))
    assert out["opacity"].shape == (1, 20, 20, 1)
    assert abs(out["depth"][0, 10, 10, 0] - (DIST - RADIUS)) < 0.03


def test_errors():
    with pytest.raises(HeadgenError, match="latent"):
        renderer().render(AnalyticField(), cams(res=4), modes=("latent",))
    with pytest.raises(HeadgenError, match="num_samples"):
        renderer(num_samples=0)
    with pytest.raises(HeadgenError, match="bound_radius"):
        renderer(bound_radius=-1.0)
