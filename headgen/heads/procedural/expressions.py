"""Expression blendshapes of the built-in head, named as in ARKit (``_L`` = the subject's left, +x).

Each shape is a displacement field with compact support around the feature it moves (so a test
can check that e.g. ``eyeBlink_L`` leaves every vertex with x < 0 alone and ``jawOpen`` nothing
above the nose): the jaw rotates about the hinge axis below the ears, lids slide over the eyeball
(a monotone remap of their angle around the eye centre), lip corners, brows, cheeks and the nose
wings move inside smooth windows. Directions: jawLeft / mouthLeft move toward +x.
"""

from __future__ import annotations

import numpy as np

from headgen.heads.procedural import anatomy as A
from headgen.heads.procedural.identity import _win
from headgen.heads.procedural.sdf import smoothstep

EXPRESSION_NAMES = (
    "jawOpen", "jawForward", "jawLeft", "jawRight", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmile_L", "mouthSmile_R", "mouthFrown_L", "mouthFrown_R",
    "mouthStretch_L", "mouthStretch_R", "mouthUpperUp_L", "mouthUpperUp_R",
    "mouthLowerDown_L", "mouthLowerDown_R",
    "eyeBlink_L", "eyeBlink_R", "eyeWide_L", "eyeWide_R", "eyeSquint_L", "eyeSquint_R",
    "browDown_L", "browDown_R", "browInnerUp", "browOuterUp_L", "browOuterUp_R",
    "cheekPuff", "cheekSquint_L", "cheekSquint_R", "noseSneer_L", "noseSneer_R",
)


def _lower_jaw_weight(v: np.ndarray, crease_half_width: float = 0.003) -> np.ndarray:
    """1 on the lower lip, chin and jaw, 0 on the upper lip and above; splits at the lip crease
    (sharply for opening, over a wider band for sliding motions that would shear the crease)."""
    x, y, z = np.abs(v[:, 0]), v[:, 1], v[:, 2]
    W = A.MOUTH_HALF_WIDTH
    beyond = np.maximum(x - W, 0.0)
    boundary = np.minimum(A.mouth_line(np.minimum(x, W)) + 0.5 * beyond, -0.24)
    half = np.minimum(crease_half_width + 0.3 * beyond, 0.05)
    w = smoothstep(boundary + half, boundary - half, y)
    w = w * smoothstep(-0.12, 0.05, z) * smoothstep(-0.80, -0.56, y) * smoothstep(0.33, 0.22, x)
    return w


def _crease(v: np.ndarray) -> np.ndarray:
    x, y = np.abs(v[:, 0]), v[:, 1]
    return np.exp(-(((y - A.mouth_line(x)) / 0.004) ** 2)) * smoothstep(A.MOUTH_HALF_WIDTH, 0.07, x)


def _rotate_x(p: np.ndarray, pivot: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    d = p - pivot
    return pivot + np.stack([d[:, 0], c * d[:, 1] - s * d[:, 2], s * d[:, 1] + c * d[:, 2]], -1)


def _lid_remap(v: np.ndarray, side: int, knots_to: callable) -> np.ndarray:
    """Displacement that slides the lids of one eye along the lid sphere.

    Vertices near the eye are rotated about the eye's horizontal axis: their angle ``a`` (up from
    straight ahead) is remapped piecewise-linearly from the knots (bottom, lower margin, upper
    margin, top of the upper lid) to ``knots_to(knots)``; bottom and top stay fixed, so the map is
    continuous and monotone (no fold).
    """
    q = v.copy()
    q[:, 0] *= side
    e = np.array([A.EYE_X, A.EYE_Y, A.EYE_Z])
    rel = q - e
    r = np.linalg.norm(rel, axis=1)
    a = np.arctan2(rel[:, 1], rel[:, 2])
    s = (q[:, 0] - A.CANTHUS_IN[0]) / (A.CANTHUS_OUT[0] - A.CANTHUS_IN[0])
    _, yu, yl = A.lid_curves(s)
    R = A.EYE_RADIUS + A.LID_THICKNESS
    zz = np.sqrt(np.maximum(R * R - (q[:, 0] - A.EYE_X) ** 2, 1e-6))
    au = np.arctan2(yu - A.EYE_Y, zz)
    al = np.arctan2(yl - A.EYE_Y, zz)
    au = np.maximum(au, al + 1e-3)
    bottom, top = al - 0.35, au + 0.55
    src = np.stack([bottom, al, au, top], -1)
    dst = knots_to(src)
    new_a = a.copy()
    for k in range(3):
        lo, hi = src[:, k], src[:, k + 1]
        inside = (a >= lo) & (a < hi)
        t = (a - lo) / np.maximum(hi - lo, 1e-9)
        new_a = np.where(inside, dst[:, k] + t * (dst[:, k + 1] - dst[:, k]), new_a)
    da = new_a - a
    c, sn = np.cos(da), np.sin(da)
    # Rotate (z, y) by da about the eye's horizontal axis: the angle a = atan2(y, z) grows by da.
    moved = np.stack([rel[:, 0], c * rel[:, 1] + sn * rel[:, 2], -sn * rel[:, 1] + c * rel[:, 2]], -1)
    w = smoothstep(-0.05, 0.22, s) * smoothstep(1.05, 0.78, s)
    w *= smoothstep(R + 0.032, R + 0.012, r) * smoothstep(0.0, 0.02, rel[:, 2])
    d = (moved - rel) * w[:, None]
    d[:, 0] *= side
    return d


def expression_fields(v: np.ndarray, normals: np.ndarray) -> dict[str, np.ndarray]:
    """Displacement ``[V,3]`` of every expression in :data:`EXPRESSION_NAMES` at weight 1."""
    x, y = v[:, 0], v[:, 1]
    zero = np.zeros_like(x)
    out: dict[str, np.ndarray] = {}
    jaw_w = _lower_jaw_weight(v)
    crease = _crease(v)
    opened = _rotate_x(v, A.JAW_PIVOT, 13.0) - v
    # The lip crease sinks in as it opens (a hint of a mouth cavity).
    sink = -0.048 * crease * jaw_w * (1 - jaw_w)
    out["jawOpen"] = jaw_w[:, None] * opened + np.stack([zero, zero, sink], -1)
    slide_w = _lower_jaw_weight(v, crease_half_width=0.03)
    out["jawForward"] = slide_w[:, None] * np.array([0.0, 0.0, 0.02])
    out["jawLeft"] = slide_w[:, None] * np.array([0.02, 0.0, 0.0])
    out["jawRight"] = slide_w[:, None] * np.array([-0.02, 0.0, 0.0])

    lips = _win(v, (0.0, -0.30, 0.42), (0.14, 0.075, 0.11), False)
    press_w = _lower_jaw_weight(v, crease_half_width=0.012)
    out["mouthClose"] = np.stack([zero, 0.005 * press_w - 0.0025 * (1 - press_w), zero], -1) * lips[:, None]
    out["mouthFunnel"] = np.stack([-0.22 * x, 0.007 * (1 - jaw_w) - 0.009 * jaw_w, np.full_like(x, 0.018)],
                                  -1) * lips[:, None]
    narrow = _win(v, (0.0, -0.30, 0.42), (0.13, 0.06, 0.10), False)
    out["mouthPucker"] = np.stack([-0.38 * x, zero, np.full_like(x, 0.016)], -1) * narrow[:, None]
    mouth = _win(v, (0.0, -0.30, 0.41), (0.17, 0.09, 0.12), False)
    out["mouthLeft"] = mouth[:, None] * np.array([0.02, 0.0, 0.0])
    out["mouthRight"] = mouth[:, None] * np.array([-0.02, 0.0, 0.0])

    corner_y = float(A.mouth_line(np.array([A.MOUTH_HALF_WIDTH]))[0])
    for side, tag in ((1, "L"), (-1, "R")):
        corner = _win(v, (side * A.MOUTH_HALF_WIDTH, corner_y, 0.385), (0.075, 0.06, 0.08), False)
        cheek = _win(v, (side * 0.15, -0.16, 0.33), (0.07, 0.06, 0.08), False)
        sgn = np.array([side, 1.0, 1.0])
        out[f"mouthSmile_{tag}"] = (corner[:, None] * np.array([0.012, 0.020, -0.010])
                                    + cheek[:, None] * np.array([0.0, 0.008, 0.004])) * sgn
        out[f"mouthFrown_{tag}"] = corner[:, None] * np.array([0.004, -0.016, -0.002]) * sgn
        out[f"mouthStretch_{tag}"] = corner[:, None] * np.array([0.016, -0.006, -0.008]) * sgn
        up = _win(v, (side * 0.045, -0.27, 0.44), (0.06, 0.045, 0.07), False) * (1 - jaw_w)
        out[f"mouthUpperUp_{tag}"] = up[:, None] * np.array([0.0, 0.009, 0.002])
        down = _win(v, (side * 0.045, -0.33, 0.43), (0.06, 0.05, 0.07), False) * jaw_w
        out[f"mouthLowerDown_{tag}"] = down[:, None] * np.array([0.0, -0.010, 0.002])

    for side, tag in ((1, "L"), (-1, "R")):
        # Knots: (bottom, lower margin, upper margin, top of the upper lid).
        out[f"eyeBlink_{tag}"] = _lid_remap(v, side, lambda k: np.stack(
            [k[:, 0], k[:, 1], k[:, 1] + 0.08 * (k[:, 2] - k[:, 1]), k[:, 3]], -1))
        out[f"eyeWide_{tag}"] = _lid_remap(v, side, lambda k: np.stack(
            [k[:, 0], k[:, 1] - 0.05, k[:, 2] + 0.16, k[:, 3]], -1))
        sq = _lid_remap(v, side, lambda k: np.stack(
            [k[:, 0], k[:, 1] + 0.3 * (k[:, 2] - k[:, 1]), k[:, 2] - 0.08 * (k[:, 2] - k[:, 1]), k[:, 3]],
            -1))
        below = _win(v, (side * 0.15, -0.075, 0.34), (0.07, 0.045, 0.07), False)
        out[f"eyeSquint_{tag}"] = sq + below[:, None] * np.array([0.0, 0.005, 0.003])
        brow = _win(v, (side * 0.13, 0.085, 0.38), (0.12, 0.05, 0.09), False)
        out[f"browDown_{tag}"] = brow[:, None] * np.array([-0.004 * side, -0.011, 0.002])
        outer = _win(v, (side * 0.20, 0.075, 0.34), (0.075, 0.055, 0.08), False)
        out[f"browOuterUp_{tag}"] = outer[:, None] * np.array([0.0, 0.014, 0.0])
        cs = _win(v, (side * 0.16, -0.09, 0.34), (0.07, 0.05, 0.07), False)
        out[f"cheekSquint_{tag}"] = cs[:, None] * np.array([0.0, 0.008, 0.004])
        ns = _win(v, (side * 0.045, -0.14, 0.43), (0.05, 0.07, 0.07), False)
        out[f"noseSneer_{tag}"] = ns[:, None] * np.array([0.002 * side, 0.008, 0.002])
    # A sided shape leaves the other half of the face alone (its window stops at the midline).
    for name in list(out):
        if name.endswith(("_L", "_R")):
            side = 1.0 if name.endswith("_L") else -1.0
            out[name] = out[name] * smoothstep(0.0, 0.012, side * x)[:, None]
    inner = _win(v, (0.06, 0.09, 0.41), (0.07, 0.06, 0.08))
    out["browInnerUp"] = inner[:, None] * np.array([0.0, 0.014, 0.001])
    puff = _win(v, (0.16, -0.22, 0.31), (0.09, 0.09, 0.10))
    out["cheekPuff"] = normals * (0.02 * puff)[:, None]
    del y
    return {name: out[name] for name in EXPRESSION_NAMES}
