"""The demo landmark-ControlNet analogue's eyes: the camera a landmark map was drawn from.

A real landmark ControlNet learned what faces look like given where their contours are drawn; the
demo analogue reads the one thing a landmark map says about the data: the viewpoint. It matches
the map against the head model's own landmark maps, drawn by the same annotator rules (back views
draw the face oval only) on a grid of azimuths and elevations at the sample's distance and field
of view, and refines the best grid match by a parabola through its neighbours' scores.

Only where lines are drawn counts, not their colours: a horizontally mirrored map then reads as the
mirrored viewpoint (an azimuth-40 map mirrored reads as about -40), as the geometry of a
left-right symmetric face says. An empty map says nothing; the caller falls back to the text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.cameras import Cameras
from headgen.render.landmarks import render_landmark_map

AZIMUTHS = torch.arange(-180.0, 180.0, 5.0)
ELEVATIONS = torch.arange(-40.0, 65.0, 5.0)
SIZE = 64
"""Maps are compared at 64 px (area-averaged, then blurred)."""
BLUR_SIGMA = 1.5


def _blur(mask: Tensor) -> Tensor:
    """[N,S,S] -> [N,S,S] Gaussian blur (sigma 1.5 px), so near misses still overlap."""
    r = 4
    x = torch.arange(-r, r + 1, dtype=mask.dtype)
    k = torch.exp(-0.5 * (x / BLUR_SIGMA) ** 2)
    k = k / k.sum()
    m = mask[:, None]
    m = F.conv2d(F.pad(m, (r, r, 0, 0)), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, r, r)), k.view(1, 1, -1, 1))
    return m[:, 0]


def drawn(maps: Tensor) -> Tensor:
    """[N,H,W,3] landmark maps -> [N,SIZE,SIZE] fraction of drawn pixels (colour ignored)."""
    m = (maps.amax(-1) > 0.02).float()[:, None]
    if m.shape[-1] != SIZE:
        m = F.interpolate(m, size=(SIZE, SIZE), mode="area")
    return m[:, 0]


def _features(mask: Tensor) -> Tensor:
    """Zero-mean, unit-norm blurred masks [N, SIZE*SIZE] (normalised cross-correlation by a dot)."""
    f = _blur(mask).flatten(1)
    f = f - f.mean(1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-8)


class LandmarkCameraReader:
    """Infers (azimuth, elevation) of landmark maps of the head model's landmarks ``points`` [N,3]."""

    def __init__(self, points: Tensor):
        self.points = points.detach().float().cpu()
        self._templates: dict[tuple[float, float], Tensor] = {}

    def templates(self, distance: float, fovy_deg: float) -> Tensor:
        """[A*E, SIZE*SIZE] template features at one (distance, fov), drawn once (quantised)."""
        key = (round(distance, 1), round(fovy_deg / 5.0) * 5.0)
        if key not in self._templates:
            az = AZIMUTHS.repeat(len(ELEVATIONS))
            el = ELEVATIONS.repeat_interleave(len(AZIMUTHS))
            cams = Cameras.from_spherical(el, az, torch.full_like(az, key[0]), torch.full_like(az, key[1]), SIZE)
            self._templates[key] = _features(drawn(render_landmark_map(self.points, cams, back_view="oval")))
        return self._templates[key]

    def read(self, maps: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor, Tensor]:
        """For landmark maps [B,H,W,3] drawn at the distances and fields of view of ``cameras``:
        inferred azimuth [B] and elevation [B] (degrees) and [B] bool whether the map showed
        anything (False: empty map, azimuth and elevation meaningless)."""
        masks = drawn(maps.detach().float().cpu())
        readable = masks.flatten(1).sum(1) > 0
        feats = _features(masks)
        az_out, el_out = torch.zeros(len(masks)), torch.zeros(len(masks))
        na, ne = len(AZIMUTHS), len(ELEVATIONS)
        for i in range(len(masks)):
            if not readable[i]:
                continue
            tpl = self.templates(float(cameras.distance[i]), math.degrees(float(cameras.fovy[i])))
            score = (tpl @ feats[i]).view(ne, na)
            k = int(score.argmax())
            e, a = divmod(k, na)
            da = _parabola(score[e, (a - 1) % na], score[e, a], score[e, (a + 1) % na])
            de = _parabola(score[e - 1, a], score[e, a], score[e + 1, a]) if 0 < e < ne - 1 else 0.0
            az_out[i] = (float(AZIMUTHS[a]) + 5.0 * da + 180.0) % 360.0 - 180.0
            el_out[i] = float(ELEVATIONS[e]) + 5.0 * de
        return az_out, el_out, readable


def _parabola(left: Tensor, mid: Tensor, right: Tensor) -> float:
    """Offset in (-0.5, 0.5) grid steps of the vertex of the parabola through three scores."""
    denom = float(left - 2 * mid + right)
    if denom >= 0:
        return 0.0
    return max(-0.5, min(0.5, 0.5 * float(left - right) / denom))
