import math

import pytest
import torch

from headgen.camera_sampling import (
    ArcCameras,
    CameraBatch,
    FixedViews,
    OrbitCameras,
    RandomCameras,
    view_label,
)
from headgen.config.typed import parse
from headgen.errors import ConfigError, HeadgenError
from headgen.registry import lookup


def build(cls, **node):
    return cls(parse(cls.Config, node))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registered_names():
    assert lookup("cameras", "random") is RandomCameras
    assert lookup("cameras", "arc") is ArcCameras
    assert lookup("cameras", "orbit") is OrbitCameras
    assert lookup("cameras", "views") is FixedViews


@pytest.mark.parametrize(
    ("el", "az", "label"),
    [
        (0, 0, "front"),
        (0, 45, "front"),
        (0, -45.1, "side"),
        (0, 135, "side"),
        (0, 135.1, "back"),
        (0, -170, "back"),
        (0, 190, "back"),  # wraps to -170
        (0, 400, "front"),  # wraps to 40
        (60, 0, "front"),
        (61, 180, "overhead"),
    ],
)
def test_view_label(el, az, label):
    assert view_label(el, az) == label


def test_view_label_custom_thresholds():
    assert view_label(0, 40, front_threshold=35) == "side"
    assert view_label(0, 140, back_threshold=145) == "side"
    assert view_label(50, 0, overhead_threshold=45) == "overhead"


def test_random_ranges_reproducible_and_consistent():
    s = build(
        RandomCameras,
        batch_size=512,
        resolution=32,
        elevation_range=[-10, 45],
        azimuth_range=[-180, 180],
        distance_range=[1.0, 1.5],
        fovy_range=[30, 50],
    )
    a = s.sample(0, gen(1))
    b = s.sample(0, gen(1))
    c = s.sample(0, gen(2))
    assert isinstance(a, CameraBatch) and len(a) == 512
    assert torch.equal(a.cameras.c2w, b.cameras.c2w) and a.view_labels == b.view_labels
    assert not torch.equal(a.cameras.c2w, c.cameras.c2w)
    cam = a.cameras
    assert cam.height == cam.width == 32
    assert cam.elevation.min() >= -10 and cam.elevation.max() <= 45
    assert cam.azimuth.min() > -180 and cam.azimuth.max() <= 180
    assert cam.azimuth.min() < -150 and cam.azimuth.max() > 150  # covers the range
    assert cam.distance.min() >= 1.0 and cam.distance.max() <= 1.5
    deg = torch.rad2deg(cam.fovy)
    assert deg.min() >= 30 - 1e-4 and deg.max() <= 50 + 1e-4
    assert torch.allclose(cam.position.norm(dim=-1), cam.distance, atol=1e-5)
    # Azimuth 0 looks at the front: the camera's x/z follow sin/cos of the azimuth.
    az = torch.deg2rad(cam.azimuth)
    horiz = cam.position[:, [0, 2]]
    assert torch.allclose(torch.atan2(horiz[:, 0], horiz[:, 1]), az, atol=1e-4)
    assert set(a.view_labels) == {"front", "side", "back"}
    assert a.lights.direction.shape == (512, 3)
    # Default headlight: the light comes from the camera.
    assert torch.allclose(a.lights.direction, torch.nn.functional.normalize(cam.position, dim=-1), atol=1e-6)
    assert torch.allclose(a.lights.color, torch.full((512, 3), 0.7))
    assert torch.allclose(a.lights.ambient, torch.full((512, 3), 0.3))


def test_sector_probabilities():
    s = build(
        RandomCameras,
        batch_size=6000,
        sector_probs=[0.5, 0.2, 0.3],
        front_threshold=35,
        back_threshold=145,
    )
    batch = s.sample(0, gen(0))
    az = batch.cameras.azimuth.abs()
    front = (az <= 35).float().mean()
    back = (az > 145).float().mean()
    assert abs(front - 0.5) < 0.03 and abs(back - 0.3) < 0.03 and abs(1 - front - back - 0.2) < 0.03
    labels = batch.view_labels
    assert abs(labels.count("front") / 6000 - front) < 1e-9
    # Uniform inside a sector: both halves of the side sector are used about equally.
    side = batch.cameras.azimuth[(az > 35) & (az <= 145)]
    assert abs((side > 0).float().mean() - 0.5) < 0.06


def test_sector_clipped_to_azimuth_range_and_errors():
    s = build(RandomCameras, batch_size=200, azimuth_range=[-90, 90], sector_probs=[0.5, 0.5, 0.0])
    az = s.sample(0, gen(0)).cameras.azimuth
    assert az.abs().max() <= 90
    with pytest.raises(HeadgenError, match="back sector"):
        build(RandomCameras, azimuth_range=[-90, 90], sector_probs=[0.5, 0.2, 0.3])
    with pytest.raises(HeadgenError, match="sector_probs"):
        build(RandomCameras, sector_probs=[-1.0, 1.0, 1.0])
    with pytest.raises(HeadgenError, match="min > max"):
        build(RandomCameras, elevation_range=[40, 10])
    with pytest.raises(HeadgenError, match="360"):
        build(RandomCameras, azimuth_range=[-180, 270])
    with pytest.raises(ConfigError, match="light"):
        build(RandomCameras, light="sun")
    with pytest.raises(ValueError, match="Generator"):
        build(RandomCameras).sample(0, None)


def test_azimuth_range_across_the_back():
    s = build(RandomCameras, batch_size=400, azimuth_range=[150, 210])
    az = s.sample(0, gen(0)).cameras.azimuth
    assert (az.abs() >= 150 - 1e-4).all()
    assert (az > 0).any() and (az < 0).any()


def test_sphere_elevation_sampling_favours_the_horizon():
    uni = build(RandomCameras, batch_size=4000, elevation_range=[-90, 90]).sample(0, gen(0))
    sph = build(
        RandomCameras, batch_size=4000, elevation_range=[-90, 90], elevation_sampling="sphere"
    ).sample(0, gen(0))
    high_uni = (uni.cameras.elevation.abs() > 60).float().mean()
    high_sph = (sph.cameras.elevation.abs() > 60).float().mean()
    assert abs(high_uni - 1 / 3) < 0.03
    assert abs(high_sph - (1 - math.sin(math.radians(60)))) < 0.03


def test_arc_and_front_hemisphere_lights():
    s = build(ArcCameras, batch_size=300, light_max_angle=30.0, light_strength=0.5, ambient=0.1)
    batch = s.sample(0, gen(0))
    cam = batch.cameras
    assert cam.azimuth.min() >= -45 and cam.azimuth.max() <= 45
    assert torch.allclose(cam.elevation, torch.zeros(300))
    to_cam = torch.nn.functional.normalize(cam.position, dim=-1)
    cos = (batch.lights.direction * to_cam).sum(-1)
    assert torch.allclose(batch.lights.direction.norm(dim=-1), torch.ones(300), atol=1e-5)
    assert cos.min() >= math.cos(math.radians(30)) - 1e-5
    # Uniform over the cap (random, not a headlight): the mean cosine is (1 + cos 30) / 2.
    assert abs(cos.mean() - (1 + math.cos(math.radians(30))) / 2) < 0.01
    half = build(ArcCameras, batch_size=2000).sample(0, gen(1))
    cos = (half.lights.direction * torch.nn.functional.normalize(half.cameras.position, dim=-1)).sum(-1)
    assert cos.min() >= -1e-5  # front hemisphere
    assert abs(cos.mean() - 0.5) < 0.03  # uniform over the hemisphere: mean cosine 1/2
    assert torch.allclose(batch.lights.color, torch.full((300, 3), 0.5))
    assert torch.allclose(batch.lights.ambient, torch.full((300, 3), 0.1))


def test_scheduled_light_strength_and_fixed_light():
    s = build(
        RandomCameras, batch_size=2, light="fixed", light_direction=[0, 0, 2], light_strength=[0, 0.2, 1.0, 100]
    )
    b0, b50 = s.sample(0, gen()), s.sample(50, gen())
    assert torch.allclose(b0.lights.direction, torch.tensor([[0.0, 0.0, 1.0]] * 2))
    assert torch.allclose(b0.lights.color, torch.full((2, 3), 0.2))
    assert torch.allclose(b50.lights.color, torch.full((2, 3), 0.6))


def test_orbit_is_deterministic_and_chunked():
    s = build(OrbitCameras, num_views=6, batch_size=4, elevation=10.0, distance=2.0, fovy=45.0)
    assert s.num_batches == 2
    first = s.sample(0, gen(0))
    again = s.sample(0, gen(99))
    assert torch.equal(first.cameras.c2w, again.cameras.c2w)
    second = s.sample(1)
    az = torch.cat([first.cameras.azimuth, second.cameras.azimuth])
    assert torch.allclose(az, torch.tensor([0.0, 60.0, 120.0, 180.0, -120.0, -60.0]), atol=1e-4)
    assert torch.allclose(first.cameras.elevation, torch.full((4,), 10.0))
    assert torch.allclose(first.cameras.distance, torch.full((4,), 2.0))
    assert torch.allclose(torch.rad2deg(first.cameras.fovy), torch.full((4,), 45.0))
    assert first.view_labels == ["front", "side", "side", "back"]
    assert torch.equal(s.sample(2).cameras.c2w, first.cameras.c2w)  # wraps around
    whole = build(OrbitCameras, num_views=5).sample(0)
    assert len(whole) == 5
    with pytest.raises(ValueError, match="Generator"):
        build(OrbitCameras, light="front-hemisphere").sample(0)


def test_explicit_views_and_device_move():
    s = build(FixedViews, views=[[0, 0], [0, 90], [0, 180], [70, 0]], resolution=16)
    batch = s.sample(0)
    assert batch.view_labels == ["front", "side", "back", "overhead"]
    assert torch.allclose(batch.cameras.azimuth, torch.tensor([0.0, 90.0, 180.0, 0.0]))
    assert batch.cameras.height == 16
    default = build(FixedViews).sample(0)
    assert torch.allclose(default.cameras.azimuth, torch.tensor([0.0, 45.0, -45.0]))
    moved = s.to("cpu").sample(0).to("cpu")
    assert moved.cameras.c2w.device.type == "cpu" and moved.lights.direction.device.type == "cpu"
    with pytest.raises(HeadgenError, match="empty"):
        build(FixedViews, views=[])
