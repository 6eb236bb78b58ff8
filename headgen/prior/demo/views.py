"""Which cameras a demo-prior branch's data are rendered at, and the cache of those renders.

A real text-to-image model knows only what its text says. So a text branch's data are renders of
its targets at the batch camera's elevation, distance and field of view over every azimuth its
text allows: all 360 degrees without a view phrase, else the phrase's sector. The sectors are the
prompt templates' (``headgen.camera_sampling.view_label``'s defaults: front |azimuth| <= 45, side
45 < |azimuth| <= 135 on both sides, since a 2D model cannot tell left from right, back beyond
135; overhead constrains elevation, which the data already take from the camera, so it keeps
every azimuth).

Azimuths are a 15-degree grid: the sector edges (45, 135) fall on it, so the sectors hold 7, 12
and 5 of its 24 azimuths; and 15 degrees is small enough that any camera has a grid render within
7.5 degrees. The batch camera itself is rendered exactly (in place of its own grid cell) whenever
its sector allows it, so a perfect head still matches closely. The other azimuths are cells,
quantised in elevation (15 degrees), distance (0.25) and field of view (10 degrees) too, and
cached across steps (LRU within a memory budget): a step renders the exact camera and only the
cells it has not seen. Unconditional and negative branches (the bank: 16 targets) hold the grid
cells only, their own included, never the exact camera: a perfect head is its target, not a bank
head, so the exact render buys the bank nothing, and rendering 16 targets at every step's
camera was most of a demo step (DreamFace on ICT-FaceKit: world.images 58 of 122 s profiled).
The quantisation is coarse on purpose: with 5-degree elevation and fov
cells a recipe's camera ranges touch about 4x more cells, and SDS on the demo prior at 128 px took
0.9 s per step over the first 30 steps instead of 0.2 s (``benchmarks/bench_guidance_speed.py
--size demo``); the exact camera keeps a perfect head's match close.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from headgen.cameras import Cameras

AZIMUTH_STEP = 15.0
GRID = [AZIMUTH_STEP * k - 165.0 for k in range(24)]  # -165 .. 180
CELL_STEP = {"elevation": 15.0, "distance": 0.25, "fovy": 10.0}
"""Quantisation of the cells' other coordinates (degrees, scene units, degrees)."""
FRONT, BACK = 45.0, 135.0


def in_sector(label: str | None, azimuth: float) -> bool:
    """Whether a text naming view ``label`` (None: no view phrase) allows ``azimuth`` (degrees)."""
    a = abs((azimuth + 180.0) % 360.0 - 180.0)
    if label in (None, "overhead"):
        return True
    if label == "front":
        return a <= FRONT + 1e-6
    if label == "side":
        return FRONT + 1e-6 < a <= BACK + 1e-6
    if label == "back":
        return a > BACK + 1e-6
    raise ValueError(f"unknown view label {label!r}; known: front, side, back, overhead")


def own_cell(azimuth: float) -> float:
    """The grid azimuth whose cell the camera at ``azimuth`` falls in."""
    k = round((azimuth + 165.0) / AZIMUTH_STEP) % 24
    return GRID[k]


def _quantise(value: float, step: float) -> float:
    return round(round(value / step) * step, 6)


@dataclass(frozen=True)
class Cell:
    """A quantised camera: grid azimuth, elevation, distance, field of view (degrees)."""

    azimuth: float
    elevation: float
    distance: float
    fovy: float


def sample_cells(cameras: Cameras, i: int, label: str | None, exact: bool = True) -> tuple[bool, list[Cell]]:
    """For sample ``i``: whether its exact camera is in the data, and the other cells' cameras
    (``exact=False``: grid cells only, the sample's own cell included: the bank's data)."""
    az = float(cameras.azimuth[i])
    el = _quantise(float(cameras.elevation[i]), CELL_STEP["elevation"])
    dist = _quantise(float(cameras.distance[i]), CELL_STEP["distance"])
    fov = _quantise(math.degrees(float(cameras.fovy[i])), CELL_STEP["fovy"])
    exact = exact and in_sector(label, az)
    mine = own_cell(az) if exact else None
    cells = [Cell(g, el, dist, fov) for g in GRID if in_sector(label, g) and g != mine]
    return exact, cells


def look_target(cameras: Cameras) -> Tensor:
    """[B,3] the look-at points of the cameras (position + distance * forward)."""
    forward = -cameras.c2w[:, :3, 2]
    return cameras.position + cameras.distance.to(forward)[:, None] * forward


def cell_cameras(cells: list[Cell], target: Tensor, size: int) -> Cameras:
    """The cameras of ``cells`` looking at ``target`` [3], images ``size`` px."""
    t = torch.tensor
    return Cameras.from_spherical(
        t([c.elevation for c in cells]), t([c.azimuth for c in cells]), t([c.distance for c in cells]),
        t([c.fovy for c in cells]), size, target=target.cpu()[None].expand(len(cells), 3),
    )


@dataclass
class CellCache:
    """LRU cache of tensors within a memory budget: a world's cell latents [M, D] keyed by (target, image
    key, latent size, look-at, cell), and the process-wide painted targets and landmark templates."""

    budget_mb: float = 1024.0
    store: OrderedDict = field(default_factory=OrderedDict)
    nbytes: int = 0
    hits: int = 0
    renders: int = 0
    peak_bytes: int = 0
    keys_seen: set = field(default_factory=set)

    def lookup(self, key: tuple) -> Tensor | None:
        value = self.store.get(key)
        if value is not None:
            self.hits += 1
            self.store.move_to_end(key)
        return value

    def put(self, key: tuple, value: Tensor) -> None:
        self.renders += 1
        self.keys_seen.add(key)
        self.store[key] = value
        self.nbytes += value.numel() * value.element_size()
        while self.nbytes > self.budget_mb * 2**20 and len(self.store) > 1:
            _, old = self.store.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def stats(self) -> dict[str, float]:
        cells = {k[-1] for k in self.keys_seen}
        return {"cells_touched": len(cells), "cell_renders": self.renders, "cell_hits": self.hits,
                "cache_mb": round(self.nbytes / 2**20, 2), "cache_peak_mb": round(self.peak_bytes / 2**20, 2)}
