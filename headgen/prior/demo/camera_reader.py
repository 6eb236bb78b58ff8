"""The demo landmark-ControlNet analogue's eyes: the camera a landmark map was drawn from.

A real landmark ControlNet learned what faces look like given where their contours are drawn; the
demo analogue reads the one thing a landmark map says about the data: the viewpoint. It matches
the map against the head model's own landmark maps, drawn by the same annotator rules (back views
draw the face oval only) on a grid of azimuths and elevations, and refines the best grid match by a
parabola through its neighbours' scores. The templates are drawn once, at one canonical distance
and field of view; an image made at another is first rescaled about its centre to the canonical
projected size (a head at distance d under field of view f appears at a size proportional to
1 / (d tan(f / 2)); perspective differences between the recipes' distances are ignored). Keyed per
distance and field of view instead, a HeadSculpt edit (distance 2.5-3.5, fov 30-50) drew 38
template sets in 25 steps, 91 of its 127 s.

Only where lines are drawn counts, not their colours: a horizontally mirrored map then reads as the
mirrored viewpoint (an azimuth-40 map mirrored reads as about -40), as the geometry of a
left-right symmetric face says. An empty map says nothing; the caller falls back to the text.
The InstructPix2Pix analogue reads its source render the same way, against grey-scale renders of
the demo target.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.cameras import Cameras, fov_to_focal
from headgen.prior.demo.views import CellCache
from headgen.render.landmarks import render_landmark_map

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


CANONICAL_DISTANCE = 3.0
CANONICAL_FOVY = 40.0
"""Where the templates are drawn: the middle of the recipes' camera ranges (distance 2.5-3.5, fov
30-50 degrees), so inputs are rescaled by 0.6-1.5."""


def _scale(distance: Tensor, fovy_rad: Tensor) -> Tensor:
    """Projected size of the head (per unit image height): focal length over distance."""
    return fov_to_focal(fovy_rad, 1) / distance


def to_canonical(images: Tensor, cameras: Cameras) -> Tensor:
    """[B,S,S] images made at ``cameras`` -> as if made at the canonical distance and field of view
    (centred zoom; outside the input, its border)."""
    canonical = _scale(torch.tensor(CANONICAL_DISTANCE), torch.deg2rad(torch.tensor(CANONICAL_FOVY)))
    ratio = _scale(cameras.distance.detach().float().cpu(), cameras.fovy.detach().float().cpu()) / canonical
    if bool(((ratio - 1).abs() < 1e-4).all()):
        return images
    b, h, w = images.shape
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = ratio
    theta[:, 1, 1] = ratio
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


class CameraReader:
    """Infers (azimuth, elevation) of images by normalised cross-correlation with templates drawn
    on an azimuth / elevation grid (``step`` degrees) at the canonical distance and field of view,
    refined by a parabola through the best match's neighbours."""

    step = 5.0

    def _draw(self, cams: Cameras) -> Tensor:
        """[N,SIZE,SIZE] template images at ``cams``."""
        raise NotImplementedError

    def _image(self, images: Tensor) -> Tensor:
        """[B,SIZE,SIZE] comparable form of input images [B,H,W,3]."""
        raise NotImplementedError

    def __init__(self) -> None:
        self._templates: Tensor | None = None
        self.azimuths = torch.arange(-180.0, 180.0, self.step)
        self.elevations = torch.arange(-40.0, 60.0 + 1e-3, self.step)

    def templates(self) -> Tensor:
        """[E*A, SIZE*SIZE] template features at the canonical distance and fov, drawn once."""
        if self._templates is None:
            az = self.azimuths.repeat(len(self.elevations))
            el = self.elevations.repeat_interleave(len(self.azimuths))
            cams = Cameras.from_spherical(el, az, torch.full_like(az, CANONICAL_DISTANCE),
                                          torch.full_like(az, CANONICAL_FOVY), SIZE)
            self._templates = _features(self._draw(cams))
        return self._templates

    def read(self, images: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor, Tensor]:
        """For images [B,H,W,3] made at the distances and fields of view of ``cameras``: inferred
        azimuth [B] and elevation [B] (degrees) and [B] bool whether the image showed anything
        (False: blank, azimuth and elevation meaningless)."""
        small = to_canonical(self._image(images.detach().float().cpu()), cameras)
        flat = small.flatten(1)
        readable = (flat.amax(1) - flat.amin(1)) > 1e-6
        feats = _features(small)
        az_out, el_out = torch.zeros(len(small)), torch.zeros(len(small))
        na, ne = len(self.azimuths), len(self.elevations)
        for i in range(len(small)):
            if not readable[i]:
                continue
            score = (self.templates() @ feats[i]).view(ne, na)
            k = int(score.argmax())
            e, a = divmod(k, na)
            da = _parabola(score[e, (a - 1) % na], score[e, a], score[e, (a + 1) % na])
            de = _parabola(score[e - 1, a], score[e, a], score[e + 1, a]) if 0 < e < ne - 1 else 0.0
            az_out[i] = (float(self.azimuths[a]) + self.step * da + 180.0) % 360.0 - 180.0
            el_out[i] = float(self.elevations[e]) + self.step * de
        return az_out, el_out, readable


class LandmarkCameraReader(CameraReader):
    """Reads landmark maps against the maps of the head model's landmarks ``points`` [N,3]."""

    def __init__(self, points: Tensor):
        super().__init__()
        self.points = points.detach().float().cpu()

    def templates(self) -> Tensor:
        """As :meth:`CameraReader.templates`, remembered per head in this process (25 MB each, about
        1.2 s to draw): one process often makes many runs on one head (tests, the bench, the viewer)."""
        if self._templates is None:
            key = (hashlib.sha256(self.points.numpy().tobytes()).hexdigest(), self.step)
            cached = _LANDMARK_TEMPLATES.lookup(key)
            if cached is None:
                cached = super().templates()
                _LANDMARK_TEMPLATES.put(key, cached)
            self._templates = cached
        return self._templates

    def _draw(self, cams: Cameras) -> Tensor:
        return drawn(render_landmark_map(self.points, cams, back_view="oval"))

    def _image(self, images: Tensor) -> Tensor:
        return drawn(images)


_LANDMARK_TEMPLATES = CellCache(budget_mb=100.0)  # 25 MB a head


class RenderCameraReader(CameraReader):
    """Reads renders of a head (the InstructPix2Pix analogue's source render) against grey-scale
    renders of the demo target ``render(cams) -> [N,SIZE,SIZE,3]``: what a model conditioned on
    the source image sees of the viewpoint. A 10-degree grid: each template is a mesh render
    (396 of them, about 3 s once per run; the 5-degree grid took 11 s), and the parabola reads 40
    random cameras (distance 2.5-3.5, fov 30-50) within 3.6 degrees (median 0.8)."""

    step = 10.0

    def __init__(self, render: Any):
        super().__init__()
        self.render = render

    def _draw(self, cams: Cameras) -> Tensor:
        return torch.cat([self._image(self.render(c)) for c in _chunks(cams, 256)])

    def _image(self, images: Tensor) -> Tensor:
        grey = images.float().mean(-1)[:, None]
        if grey.shape[-1] != SIZE:
            grey = F.interpolate(grey, size=(SIZE, SIZE), mode="area")
        return grey[:, 0]


def _chunks(cams: Cameras, n: int) -> list[Cameras]:
    from dataclasses import replace

    out = []
    for i in range(0, cams.batch_size, n):
        s = slice(i, i + n)
        out.append(replace(cams, c2w=cams.c2w[s], fovy=cams.fovy[s], elevation=cams.elevation[s],
                           azimuth=cams.azimuth[s], distance=cams.distance[s]))
    return out


def _parabola(left: Tensor, mid: Tensor, right: Tensor) -> float:
    """Offset in (-0.5, 0.5) grid steps of the vertex of the parabola through three scores."""
    denom = float(left - 2 * mid + right)
    if denom >= 0:
        return 0.0
    return max(-0.5, min(0.5, 0.5 * float(left - right) / denom))
