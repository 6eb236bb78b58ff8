"""MediaPipe landmarks of the built-in head: where each contour point sits on the surface.

Every contour is walked along the feature it outlines, in the order of MediaPipe's
``FaceLandmarksConnections`` lists (checked against the installed package by the tests): the face
oval from the top of the forehead toward the subject's left (+x) and down to the chin, the lip
borders and the lip crease from the right corner to the left one, the lid margins from the outer to
the inner corner, the brows from their outer to their inner end. MediaPipe's LEFT is the subject's
left (+x). The pupils (468 right, 473 left) are the cornea apexes; a few midline points of the nose
and chin are added for convenience.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from headgen.heads.procedural import anatomy as A

# Contours as walked by the connection lists (first-seen order of each list's endpoints).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIPS_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
PUPILS = (468, 473)
# Midline extras: nasion, nose bridge and tip, subnasale, glabella, forehead, chin.
MIDLINE = {168: (0.029, 0.418), 6: (-0.006, 0.441), 197: (-0.038, 0.465), 195: (-0.067, 0.485),
           5: (-0.097, 0.505), 4: (-0.133, 0.520), 1: (-0.160, 0.515), 19: (-0.178, 0.499),
           94: (-0.190, 0.477), 2: (-0.204, 0.453), 164: (-0.223, 0.448), 9: (0.099, 0.424),
           151: (0.172, 0.409), 18: (-0.382, 0.410), 200: (-0.417, 0.414), 199: (-0.458, 0.415),
           175: (-0.494, 0.403)}
"""MediaPipe id -> (y, z) of the target on the midline (the surface point is found along a ray)."""


def _unique(*seqs: tuple[int, ...]) -> list[int]:
    out: list[int] = []
    for s in seqs:
        for i in s:
            if i not in out:
                out.append(i)
    return out


CONTOUR_IDS: list[int] = _unique(
    FACE_OVAL,
    LIPS_LOWER_OUTER, LIPS_UPPER_OUTER, LIPS_LOWER_INNER, LIPS_UPPER_INNER,
    LEFT_EYE_LOWER, LEFT_EYE_UPPER, LEFT_BROW_LOWER, LEFT_BROW_UPPER,
    RIGHT_EYE_LOWER, RIGHT_EYE_UPPER, RIGHT_BROW_LOWER, RIGHT_BROW_UPPER,
)
"""The 128 contour landmark ids, contour by contour in connection-list order."""

# Face oval control points (left half, top to chin), on or near the surface. These values, and the
# MIDLINE (y, z) pairs above, are rounded positions read off MediaPipe's canonical face model
# (Apache License 2.0, (c) Google LLC) and converted to this head's units.
_OVAL_LEFT = np.array([
    [0.000, 0.246, 0.385], [0.080, 0.244, 0.377], [0.153, 0.233, 0.352], [0.222, 0.212, 0.306],
    [0.273, 0.176, 0.252], [0.308, 0.123, 0.194], [0.328, 0.066, 0.147], [0.336, -0.010, 0.103],
    [0.336, -0.085, 0.095], [0.328, -0.160, 0.090], [0.315, -0.240, 0.095], [0.292, -0.321, 0.118],
    [0.258, -0.383, 0.163], [0.221, -0.425, 0.221], [0.177, -0.460, 0.274], [0.140, -0.484, 0.312],
    [0.100, -0.503, 0.347], [0.055, -0.516, 0.368], [0.000, -0.522, 0.375],
])


def _cos_spacing(n: int) -> np.ndarray:
    """n parameters in [0, 1], denser toward both ends (like MediaPipe's corner points)."""
    return 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, n))


def _on_lid_shell(x: np.ndarray, y: np.ndarray, eye_x: float) -> np.ndarray:
    r = A.EYE_RADIUS + A.LID_THICKNESS
    dz = np.sqrt(np.maximum(r * r - (x - eye_x) ** 2 - (y - A.EYE_Y) ** 2, 0.0))
    return np.stack([x, y, A.EYE_Z + dz], -1)


def _eye_targets(side: int) -> dict[int, np.ndarray]:
    s = 1.0 - _cos_spacing(9)  # outer corner (s = 1) to inner corner (s = 0)
    x, yu, yl = A.lid_curves(s)
    corner = 0.5 * (yu + yl)
    yu = np.where((s == 0) | (s == 1), corner, yu)
    yl = np.where((s == 0) | (s == 1), corner, yl)
    if side > 0:
        lower_ids, upper_ids = LEFT_EYE_LOWER, LEFT_EYE_UPPER
    else:
        lower_ids, upper_ids = RIGHT_EYE_LOWER, RIGHT_EYE_UPPER
    out = {}
    for ids, ys in ((lower_ids, yl), (upper_ids, yu)):
        pts = _on_lid_shell(x, ys, A.EYE_X)
        pts[:, 0] *= side
        out.update(zip(ids, pts))
    return out


def _brow_curves(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper edge of the left eyebrow at s in [0, 1] (inner -> outer): (xl, yl, xu, yu)."""
    xl = 0.055 + 0.175 * s
    yl = 0.066 + 0.022 * np.sin(np.pi * s ** 0.8) - 0.010 * s
    xu = 0.061 + 0.188 * s
    yu = 0.102 + 0.014 * np.sin(np.pi * s ** 0.9) - 0.030 * s * s
    return xl, yl, xu, yu


def _brow_targets(side: int) -> dict[int, np.ndarray]:
    s = np.linspace(1.0, 0.0, 5)  # outer -> inner
    xl, yl, xu, yu = _brow_curves(s)
    if side > 0:
        lower_ids, upper_ids = LEFT_BROW_LOWER, LEFT_BROW_UPPER
    else:
        lower_ids, upper_ids = RIGHT_BROW_LOWER, RIGHT_BROW_UPPER
    out = {}
    for ids, xs, ys in ((lower_ids, xl, yl), (upper_ids, xu, yu)):
        # Depth is found on the surface later; a point in front of the brow is enough here.
        pts = np.stack([side * xs, ys, np.full_like(xs, 0.40)], -1)
        out.update(zip(ids, pts))
    return out


def _lip_targets() -> dict[int, np.ndarray]:
    w = A.MOUTH_HALF_WIDTH
    x = -w * np.cos(np.pi * np.linspace(0.0, 1.0, 11))  # right corner (-x) -> left corner (+x)
    out = {}
    corner_y = A.mouth_line(np.array([w]))[0]
    yo_u = np.where(np.abs(x) >= w - 1e-9, corner_y, A.upper_lip_border(x))
    yo_l = np.where(np.abs(x) >= w - 1e-9, corner_y, A.lower_lip_border(x))
    z = np.full_like(x, 0.45)
    out.update(zip(LIPS_UPPER_OUTER, np.stack([x, yo_u, z], -1)))
    out.update(zip(LIPS_LOWER_OUTER, np.stack([x, yo_l, z], -1)))
    w_in = 0.86 * w
    xi = -w_in * np.cos(np.pi * np.linspace(0.0, 1.0, 11))
    ym = A.mouth_line(xi)
    # The inner contours run along the crease, just above (upper lip) and below (lower lip) it.
    gap = 0.0035 * np.sin(np.pi * np.linspace(0.0, 1.0, 11)) ** 0.5
    out.update(zip(LIPS_UPPER_INNER, np.stack([xi, ym + gap, z], -1)))
    out.update(zip(LIPS_LOWER_INNER, np.stack([xi, ym - gap, z], -1)))
    return out


def _oval_targets() -> dict[int, np.ndarray]:
    left = _OVAL_LEFT
    right = left[::-1][1:-1] * np.array([-1.0, 1.0, 1.0])
    loop = np.concatenate([left, right])  # top -> left side -> chin -> right side
    closed = np.concatenate([loop, loop[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(seg)])
    spline = CubicSpline(t, closed, bc_type="periodic")
    fine = np.linspace(0.0, t[-1], 2001)
    pts = spline(fine)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    # 36 points at equal arc length, with 10 at the top and 152 (index 18) at the chin.
    half = np.interp(t[len(left) - 1], fine, arc)
    k = np.arange(36)
    target_arc = np.where(k <= 18, k / 18 * half, half + (k - 18) / 18 * (arc[-1] - half))
    samples = spline(np.interp(target_arc, arc, fine))
    samples[0, 0] = 0.0
    samples[18, 0] = 0.0
    return dict(zip(FACE_OVAL, samples))


def landmark_targets(frontal_depth) -> tuple[np.ndarray, np.ndarray]:
    """(ids [L], target points [L,3]) on or near the surface; rays from the mesh centre then place
    them on the mesh. ``frontal_depth(x, y)`` gives the surface depth seen from the front, used for
    the brows, lips and midline points."""
    targets: dict[int, np.ndarray] = {}
    targets.update(_oval_targets())
    targets.update(_lip_targets())
    targets.update(_eye_targets(+1))
    targets.update(_brow_targets(+1))
    targets.update(_eye_targets(-1))
    targets.update(_brow_targets(-1))
    ids = list(CONTOUR_IDS)
    pupils = {468: np.array([-A.EYE_X, A.EYE_Y, A.EYE_Z + A.EYE_RADIUS]),
              473: np.array([A.EYE_X, A.EYE_Y, A.EYE_Z + A.EYE_RADIUS])}
    targets.update(pupils)
    ids += list(PUPILS)
    for i, (y, z) in MIDLINE.items():
        targets[i] = np.array([0.0, y, z])
        ids.append(i)
    frontal = list(LIPS_LOWER_OUTER + LIPS_UPPER_OUTER + LIPS_LOWER_INNER + LIPS_UPPER_INNER
                   + LEFT_BROW_LOWER + LEFT_BROW_UPPER + RIGHT_BROW_LOWER + RIGHT_BROW_UPPER) + list(MIDLINE)
    pts = np.stack([targets[i] for i in frontal])
    z = frontal_depth(pts[:, 0], pts[:, 1])
    for i, zz in zip(frontal, z):
        targets[i] = np.array([targets[i][0], targets[i][1], zz])
    return np.array(ids, dtype=np.int64), np.stack([targets[i] for i in ids])
