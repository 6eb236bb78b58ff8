"""Signed-distance primitives (numpy, vectorised over points ``p [N,3]``).

The values are distance bounds, not exact distances: good enough to sphere-trace (the head
generator marches rays with a safety factor) and to blend with the smooth min/max below.
Negative is inside.
"""

from __future__ import annotations

import numpy as np


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (union) with blend radius ``k``."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth maximum (intersection); ``smax(a, -b, k)`` subtracts ``b`` from ``a``."""
    return -smin(-a, -b, k)


def sphere(p: np.ndarray, c, r: float) -> np.ndarray:
    return np.linalg.norm(p - np.asarray(c), axis=-1) - r


def ellipsoid(p: np.ndarray, c, radii, rot: np.ndarray | None = None) -> np.ndarray:
    """Ellipsoid centred at ``c`` with semi-axes ``radii`` (in the frame ``rot``, columns = axes)."""
    q = p - np.asarray(c)
    if rot is not None:
        q = q @ rot
    r = np.asarray(radii, dtype=float)
    a = q[:, 0] / r[0]
    b = q[:, 1] / r[1]
    c_ = q[:, 2] / r[2]
    k0 = np.sqrt(a * a + b * b + c_ * c_)
    a /= r[0]
    b /= r[1]
    c_ /= r[2]
    k1 = np.sqrt(a * a + b * b + c_ * c_)
    # Quilez's bound: exact on the surface, a fair distance estimate nearby.
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def local(p: np.ndarray, lo, hi, fn, margin: float = 0.04) -> np.ndarray:
    """``fn(p)`` for points within ``margin`` of the box ``[lo, hi]``; the distance to the box elsewhere.

    The box must contain the feature, so the box distance is a lower bound of the feature's
    distance; blending a feature through smin/smax with a radius below ``margin`` then gives the
    exact result near the surface while skipping the feature's cost everywhere else.
    """
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    gap = np.maximum(np.maximum(lo - p, p - hi), 0.0)
    dist = np.sqrt(np.sum(gap * gap, axis=1))
    near = dist < margin
    out = dist.copy()
    if near.any():
        out[near] = fn(p[near])
    return out


def round_cone(p: np.ndarray, a, b, ra: float, rb: float) -> np.ndarray:
    """A capsule from ``a`` to ``b`` whose radius goes linearly from ``ra`` to ``rb``."""
    a = np.asarray(a, dtype=float)
    ab = np.asarray(b, dtype=float) - a
    h = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    d = np.linalg.norm(p - a - h[:, None] * ab, axis=-1)
    return d - (ra + (rb - ra) * h)


def tube(p: np.ndarray, points: np.ndarray, radii: np.ndarray, k: float = 0.0) -> np.ndarray:
    """A chain of round cones through ``points [M,3]`` with radii ``[M]`` (smoothly joined)."""
    d = round_cone(p, points[0], points[1], radii[0], radii[1])
    for i in range(1, len(points) - 1):
        d = smin(d, round_cone(p, points[i], points[i + 1], radii[i], radii[i + 1]), k)
    return d


def rot_y(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def bump(r2: np.ndarray) -> np.ndarray:
    """Compactly supported smooth bump of a squared normalised radius: 1 at 0, 0 for r2 >= 1."""
    t = np.clip(1.0 - r2, 0.0, 1.0)
    return t * t * t
