"""Camera samplers: the batch of views (cameras, lights, view labels) one step renders.

Every sampler is registered under kind ``cameras`` and has ``sample(step, generator)`` returning a
:class:`CameraBatch`. All randomness comes from the ``torch.Generator`` passed in (a CPU
generator), so a run with the same seed draws the same views on any device; the results are then
moved to the sampler's ``device``.

Angles are degrees, in the conventions of :mod:`headgen.cameras` (azimuth 0 = front view, +90 =
the subject's left side, elevation up from the horizon). Recipes written in threestudio /
stable-dreamfusion terms convert the polar angle ``theta`` (from +y) as ``elevation = 90 - theta``:
HeadSculpt's theta [20, 110] is elevation [-20, 70].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import torch
from torch import Tensor

from headgen.cameras import Cameras, Lights, wrap_azimuth
from headgen.config import Scalar, value_at
from headgen.errors import HeadgenError
from headgen.registry import register

ViewLabel = Literal["front", "side", "back", "overhead"]
LightMode = Literal["headlight", "front-hemisphere", "fixed"]
SECTORS: tuple[str, str, str] = ("front", "side", "back")


def view_label(
    elevation: float,
    azimuth: float,
    overhead_threshold: float = 60.0,
    front_threshold: float = 45.0,
    back_threshold: float = 135.0,
) -> ViewLabel:
    """The view word for prompts: ``overhead`` when elevation > ``overhead_threshold``, else
    ``front`` when |azimuth| <= ``front_threshold``, ``back`` when |azimuth| > ``back_threshold``,
    ``side`` otherwise (azimuth is wrapped to (-180, 180] first)."""
    if elevation > overhead_threshold:
        return "overhead"
    az = abs(float(wrap_azimuth(torch.tensor(float(azimuth)))))
    if az <= front_threshold:
        return "front"
    if az > back_threshold:
        return "back"
    return "side"


def view_labels(
    cameras: Cameras,
    overhead_threshold: float = 60.0,
    front_threshold: float = 45.0,
    back_threshold: float = 135.0,
) -> list[str]:
    """:func:`view_label` for every camera of a batch."""
    return [
        view_label(el, az, overhead_threshold, front_threshold, back_threshold)
        for el, az in zip(cameras.elevation.tolist(), cameras.azimuth.tolist())
    ]


@dataclass
class CameraBatch:
    """What one step renders: B cameras, their lights and their view labels."""

    cameras: Cameras
    lights: Lights
    view_labels: list[str]
    """One of 'front', 'side', 'back', 'overhead' per camera (see :func:`view_label`)."""

    @property
    def batch_size(self) -> int:
        return self.cameras.batch_size

    def to(self, device: torch.device | str) -> CameraBatch:
        return replace(self, cameras=self.cameras.to(device), lights=self.lights.to(device))

    def __len__(self) -> int:
        return self.batch_size


@dataclass
class SamplerConfig:
    """Options every camera sampler shares."""

    batch_size: int = 1
    """Views per step."""
    resolution: int = 64
    """Pixel size stored on the sampled cameras. In an optimize stage the renderer's `resolution`
    decides the image size (landmark maps follow the render), so this value does not change a
    stage's images and the recipes leave it out; it matters only where cameras are used without a
    renderer."""
    light: LightMode = "headlight"
    """headlight: light from the camera; front-hemisphere: random direction within light_max_angle of
    the camera direction (DreamFace); fixed: light_direction in world space."""
    light_strength: Scalar = 0.7
    """Diffuse intensity of the directional light (number or schedule)."""
    ambient: Scalar = 0.3
    """Ambient intensity (number or schedule)."""
    light_max_angle: float = 90.0
    """front-hemisphere: largest angle (degrees) between the light and the camera direction; 90 is
    the whole hemisphere facing the camera."""
    light_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """fixed: world-space direction toward the light (normalised; +z is the front of the head)."""
    overhead_threshold: float = 60.0
    """View labels: elevation above this (degrees) is 'overhead'."""
    front_threshold: float = 45.0
    """View labels: |azimuth| up to this is 'front'."""
    back_threshold: float = 135.0
    """View labels: |azimuth| above this is 'back'."""


def _check_range(
    name: str, rng: tuple[float, float], lo: float | None = None, hi: float | None = None
) -> None:
    if rng[0] > rng[1]:
        raise HeadgenError(f"cameras.{name}: [{rng[0]}, {rng[1]}] has min > max; write it as [min, max]")
    if lo is not None and rng[0] <= lo:
        raise HeadgenError(f"cameras.{name}: values must be > {lo}, got [{rng[0]}, {rng[1]}]")
    if hi is not None and rng[1] >= hi:
        raise HeadgenError(f"cameras.{name}: values must be < {hi}, got [{rng[0]}, {rng[1]}]")


def _uniform(rng: tuple[float, float], n: int, generator: torch.Generator) -> Tensor:
    return rng[0] + (rng[1] - rng[0]) * torch.rand(n, generator=generator)


def _need_generator(generator: torch.Generator | None, what: str) -> torch.Generator:
    if generator is None:
        raise ValueError(f"{what} draws random numbers: pass a torch.Generator (CPU) to sample()")
    return generator


class CameraSampler:
    """Base class: light sampling, view labels and device handling shared by all samplers."""

    Config = SamplerConfig

    def __init__(self, cfg: SamplerConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        if cfg.resolution < 1:
            raise HeadgenError(f"cameras.resolution must be >= 1, got {cfg.resolution}")
        if not 0.0 < cfg.light_max_angle <= 180.0:
            raise HeadgenError(f"cameras.light_max_angle must be in (0, 180], got {cfg.light_max_angle}")
        if math.hypot(*cfg.light_direction) < 1e-8:
            raise HeadgenError("cameras.light_direction must be a non-zero vector, e.g. [0, 0, 1]")
        if not 0.0 <= cfg.front_threshold <= cfg.back_threshold <= 180.0:
            raise HeadgenError(
                "cameras: need 0 <= front_threshold <= back_threshold <= 180, got "
                f"front_threshold={cfg.front_threshold}, back_threshold={cfg.back_threshold}"
            )

    def to(self, device: torch.device | str) -> CameraSampler:
        self.device = torch.device(device)
        return self

    def sample(self, step: int, generator: torch.Generator | None = None) -> CameraBatch:
        raise NotImplementedError(f"{type(self).__name__}.sample")

    def _finish(self, cameras: Cameras, step: int, generator: torch.Generator | None) -> CameraBatch:
        lights = self._lights(cameras, step, generator)
        labels = view_labels(
            cameras, self.cfg.overhead_threshold, self.cfg.front_threshold, self.cfg.back_threshold
        )
        return CameraBatch(cameras, lights, labels).to(self.device)

    def _lights(self, cameras: Cameras, step: int, generator: torch.Generator | None) -> Lights:
        cfg = self.cfg
        b = cameras.batch_size
        strength = value_at(cfg.light_strength, step)
        ambient = value_at(cfg.ambient, step)
        toward_camera = torch.nn.functional.normalize(cameras.position, dim=-1)
        if cfg.light == "headlight":
            direction = toward_camera
        elif cfg.light == "fixed":
            d = torch.tensor(cfg.light_direction, dtype=torch.float32)
            direction = torch.nn.functional.normalize(d, dim=0).expand(b, 3).clone()
        elif cfg.light == "front-hemisphere":
            g = _need_generator(generator, "light: front-hemisphere")
            direction = sample_cone(toward_camera, cfg.light_max_angle, g)
        else:  # the config parser only lets the Literal through; this guards direct construction
            raise HeadgenError(f"cameras.light: unknown mode '{cfg.light}'; use one of {get_args(LightMode)}")
        return Lights(direction, torch.full((b, 3), strength), torch.full((b, 3), ambient))


def sample_cone(axis: Tensor, max_angle_deg: float, generator: torch.Generator) -> Tensor:
    """Unit vectors [B,3] uniform (by solid angle) within ``max_angle_deg`` of unit ``axis`` [B,3]."""
    b = axis.shape[0]
    u = torch.rand(b, generator=generator)
    v = torch.rand(b, generator=generator)
    cos_max = math.cos(math.radians(max_angle_deg))
    cos_t = 1.0 - u * (1.0 - cos_max)
    sin_t = torch.sqrt((1.0 - cos_t**2).clamp_min(0.0))
    phi = 2.0 * math.pi * v
    # Any vector not parallel to the axis gives a tangent basis.
    helper = torch.tensor([0.0, 1.0, 0.0]).expand(b, 3)
    alt = torch.tensor([1.0, 0.0, 0.0]).expand(b, 3)
    helper = torch.where((axis * helper).sum(-1, keepdim=True).abs() > 0.9, alt, helper)
    t1 = torch.nn.functional.normalize(torch.cross(axis, helper, dim=-1), dim=-1)
    t2 = torch.cross(axis, t1, dim=-1)
    tangent = torch.cos(phi)[:, None] * t1 + torch.sin(phi)[:, None] * t2
    out = cos_t[:, None] * axis + sin_t[:, None] * tangent
    return torch.nn.functional.normalize(out, dim=-1)


# --------------------------------------------------------------------------------------------
# Random cameras in ranges


@dataclass
class RangeConfig(SamplerConfig):
    """Uniform ranges for the spherical camera parameters."""

    elevation_range: tuple[float, float] = (-10.0, 45.0)
    """Elevation range in degrees (threestudio/stable-dreamfusion theta: elevation = 90 - theta)."""
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    """Azimuth range in degrees (0 = front, +90 = the subject's left); may cross +-180."""
    distance_range: tuple[float, float] = (3.0, 3.0)
    """Camera distance to the origin (world units)."""
    fovy_range: tuple[float, float] = (30.0, 50.0)
    """Vertical field of view in degrees."""


class _RangeSampler(CameraSampler):
    cfg: RangeConfig

    def __init__(self, cfg: RangeConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, device)
        if cfg.batch_size < 1:
            raise HeadgenError(f"cameras.batch_size must be >= 1, got {cfg.batch_size}")
        _check_range("elevation_range", cfg.elevation_range, -90.0 - 1e-9, 90.0 + 1e-9)
        _check_range("azimuth_range", cfg.azimuth_range)
        if cfg.azimuth_range[1] - cfg.azimuth_range[0] > 360.0:
            raise HeadgenError(
                f"cameras.azimuth_range {list(cfg.azimuth_range)} spans more than 360 degrees; "
                "use [-180, 180] for all around"
            )
        _check_range("distance_range", cfg.distance_range, 0.0)
        _check_range("fovy_range", cfg.fovy_range, 0.0, 180.0)

    def _elevation(self, n: int, g: torch.Generator) -> Tensor:
        return _uniform(self.cfg.elevation_range, n, g)

    def _azimuth(self, n: int, g: torch.Generator) -> Tensor:
        return _uniform(self.cfg.azimuth_range, n, g)

    def sample(self, step: int, generator: torch.Generator | None = None) -> CameraBatch:
        cfg = self.cfg
        g = _need_generator(generator, type(self).__name__)
        n = cfg.batch_size
        # Fixed draw order (elevation, azimuth, distance, fov, lights) keeps runs reproducible.
        elevation = self._elevation(n, g)
        azimuth = self._azimuth(n, g)
        distance = _uniform(cfg.distance_range, n, g)
        fovy = _uniform(cfg.fovy_range, n, g)
        cameras = Cameras.from_spherical(elevation, azimuth, distance, fovy, cfg.resolution)
        return self._finish(cameras, step, g)


@register("cameras", "random")
class RandomCameras(_RangeSampler):
    """Random cameras: uniform elevation/azimuth/distance/fov ranges, optional azimuth sector weights."""

    @dataclass
    class Config(RangeConfig):
        elevation_sampling: Literal["uniform", "sphere"] = "uniform"
        """uniform: elevation uniform in degrees; sphere: uniform over the sphere's area (sin(elevation)
        uniform), so high elevations are drawn less often."""
        sector_probs: tuple[float, float, float] | None = None
        """Probabilities of drawing the azimuth in the front (|az| <= front_threshold), side and back
        (|az| > back_threshold) sectors, then uniformly inside the sector (clipped to azimuth_range);
        null: uniform over azimuth_range. HeadSculpt's 70-degree front/back sectors are
        front_threshold 35, back_threshold 145."""

    cfg: Config

    def __init__(self, cfg: Config, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, device)
        self._sectors: list[list[tuple[float, float]]] = []
        self._sector_probs: Tensor | None = None
        if cfg.sector_probs is not None:
            probs = torch.tensor(cfg.sector_probs, dtype=torch.float64)
            if (probs < 0).any() or probs.sum() <= 0:
                raise HeadgenError(
                    f"cameras.sector_probs must be >= 0 and not all 0, got {list(cfg.sector_probs)}"
                )
            pieces = _azimuth_pieces(*cfg.azimuth_range)
            for name, sector, p in zip(SECTORS, self._sector_pieces(), cfg.sector_probs):
                inter = _intersect(pieces, sector)
                if p > 0 and sum(b - a for a, b in inter) <= 0:
                    raise HeadgenError(
                        f"cameras.sector_probs gives the {name} sector probability {p}, but azimuth_range "
                        f"{list(cfg.azimuth_range)} does not overlap it; set its probability to 0"
                    )
                self._sectors.append(inter)
            self._sector_probs = (probs / probs.sum()).float()

    def _sector_pieces(self) -> list[list[tuple[float, float]]]:
        f, bk = self.cfg.front_threshold, self.cfg.back_threshold
        return [
            [(-f, f)],
            [(f, bk), (-bk, -f)],
            [(bk, 180.0), (-180.0, -bk)],
        ]

    def _elevation(self, n: int, g: torch.Generator) -> Tensor:
        if self.cfg.elevation_sampling == "uniform":
            return super()._elevation(n, g)
        lo, hi = (math.sin(math.radians(e)) for e in self.cfg.elevation_range)
        s = lo + (hi - lo) * torch.rand(n, generator=g)
        return torch.rad2deg(torch.asin(s.clamp(-1.0, 1.0)))

    def _azimuth(self, n: int, g: torch.Generator) -> Tensor:
        if self._sector_probs is None:
            return super()._azimuth(n, g)
        which = torch.multinomial(self._sector_probs, n, replacement=True, generator=g)
        u = torch.rand(n, generator=g)
        out = torch.empty(n)
        for i in range(n):
            out[i] = _pick_in_pieces(self._sectors[int(which[i])], float(u[i]))
        return out


def _azimuth_pieces(lo: float, hi: float) -> list[tuple[float, float]]:
    """The range [lo, hi] (degrees, span <= 360) as intervals inside [-180, 180]."""
    if hi - lo >= 360.0:
        return [(-180.0, 180.0)]
    start = (lo + 180.0) % 360.0 - 180.0
    end = start + (hi - lo)
    if end <= 180.0:
        return [(start, end)]
    return [(start, 180.0), (-180.0, end - 360.0)]


def _intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for a0, a1 in a:
        for b0, b1 in b:
            lo, hi = max(a0, b0), min(a1, b1)
            if hi > lo:
                out.append((lo, hi))
    return out


def _pick_in_pieces(pieces: list[tuple[float, float]], u: float) -> float:
    """The point at fraction ``u`` of the total length of ``pieces`` (uniform when u is)."""
    total = sum(b - a for a, b in pieces)
    x = u * total
    for a, b in pieces:
        if x <= b - a:
            return a + x
        x -= b - a
    return pieces[-1][1]


@register("cameras", "arc")
class ArcCameras(_RangeSampler):
    """Cameras on an arc (DreamFace): azimuth uniform in [-45, 45], fixed elevation and distance."""

    @dataclass
    class Config(RangeConfig):
        azimuth_range: tuple[float, float] = (-45.0, 45.0)
        """Azimuth range in degrees: DreamFace uses left 45 to right 45."""
        elevation_range: tuple[float, float] = (0.0, 0.0)
        """Elevation range in degrees (a fixed value by default: an arc)."""
        fovy_range: tuple[float, float] = (40.0, 40.0)
        """Vertical field of view in degrees."""
        light: LightMode = "front-hemisphere"
        """DreamFace lights each view from a random direction in the camera's front hemisphere."""

    cfg: Config


# --------------------------------------------------------------------------------------------
# Deterministic evaluation views


@dataclass
class FixedViewsConfig(SamplerConfig):
    batch_size: int = 0
    """Views per sample() call; 0 = all views in one batch. sample(step) returns chunk
    (step mod number of chunks), so a loop over num_batches steps visits every view once."""
    distance: float = 3.0
    """Camera distance to the origin."""
    fovy: float = 40.0
    """Vertical field of view in degrees."""


class _FixedViews(CameraSampler):
    cfg: FixedViewsConfig

    def __init__(self, cfg: FixedViewsConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, device)
        if cfg.distance <= 0:
            raise HeadgenError(f"cameras.distance must be > 0, got {cfg.distance}")
        if not 0.0 < cfg.fovy < 180.0:
            raise HeadgenError(f"cameras.fovy must be in (0, 180) degrees, got {cfg.fovy}")
        if cfg.batch_size < 0:
            raise HeadgenError(f"cameras.batch_size must be >= 0 (0 = all views), got {cfg.batch_size}")

    def _angles(self) -> tuple[Tensor, Tensor]:
        """Elevation and azimuth [N] of every view."""
        raise NotImplementedError(f"{type(self).__name__}._angles")

    @property
    def num_views(self) -> int:
        return self._angles()[0].shape[0]

    @property
    def num_batches(self) -> int:
        per = self.cfg.batch_size or self.num_views
        return -(-self.num_views // per)

    def sample(self, step: int, generator: torch.Generator | None = None) -> CameraBatch:
        elevation, azimuth = self._angles()
        per = self.cfg.batch_size or self.num_views
        start = (step % self.num_batches) * per
        elevation, azimuth = elevation[start : start + per], azimuth[start : start + per]
        n = elevation.shape[0]
        cameras = Cameras.from_spherical(
            elevation,
            azimuth,
            torch.full((n,), self.cfg.distance),
            torch.full((n,), self.cfg.fovy),
            self.cfg.resolution,
        )
        return self._finish(cameras, step, generator)


@register("cameras", "orbit")
class OrbitCameras(_FixedViews):
    """Turntable for evaluation: num_views views evenly spaced in azimuth at one elevation."""

    @dataclass
    class Config(FixedViewsConfig):
        num_views: int = 8
        """Number of views around the head."""
        elevation: float = 0.0
        """Elevation of every view, degrees."""
        azimuth_start: float = 0.0
        """Azimuth of the first view; view k is at azimuth_start + 360 k / num_views."""

    cfg: Config

    def __init__(self, cfg: Config, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, device)
        if cfg.num_views < 1:
            raise HeadgenError(f"cameras.num_views must be >= 1, got {cfg.num_views}")

    def _angles(self) -> tuple[Tensor, Tensor]:
        n = self.cfg.num_views
        az = self.cfg.azimuth_start + 360.0 * torch.arange(n, dtype=torch.float64) / n
        return torch.full((n,), self.cfg.elevation), az.float()


@register("cameras", "views")
class FixedViews(_FixedViews):
    """Explicit evaluation views: a list of (elevation, azimuth) pairs in degrees."""

    @dataclass
    class Config(FixedViewsConfig):
        views: list[tuple[float, float]] = field(
            default_factory=lambda: [(0.0, 0.0), (0.0, 45.0), (0.0, -45.0)]
        )
        """(elevation, azimuth) pairs in degrees; the default is DreamFace's front and two 3/4 views."""

    cfg: Config

    def __init__(self, cfg: Config, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, device)
        if not cfg.views:
            raise HeadgenError("cameras.views is empty; give at least one [elevation, azimuth] pair")

    def _angles(self) -> tuple[Tensor, Tensor]:
        v = torch.tensor(self.cfg.views, dtype=torch.float32).reshape(-1, 2)
        return v[:, 0], v[:, 1]


__all__ = [
    "ArcCameras",
    "CameraBatch",
    "CameraSampler",
    "FixedViews",
    "OrbitCameras",
    "RandomCameras",
    "sample_cone",
    "view_label",
    "view_labels",
]
