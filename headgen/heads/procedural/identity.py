"""Identity basis of the built-in head.

About sixty named, smooth displacement fields (global proportions, then local features: nose, eyes,
brows, lips, chin, cheeks, ears, plus a few seeded random bumps) each with a standard deviation
in head-height units. The basis is the principal components of the Gaussian population they
span: ``S_k = s_k U_k`` from the SVD of ``[sigma_i f_i]``, so the modes are orthogonal, sorted by
variance, and coefficients ~ N(0, 1) reproduce the population exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from headgen.heads.procedural import anatomy as A
from headgen.heads.procedural.sdf import bump, smoothstep

Field = tuple[str, float, np.ndarray]


def _win(v: np.ndarray, c, r, mirror: bool = True) -> np.ndarray:
    """Smooth compact window around ``c`` with radii ``r`` (on both sides if ``mirror``)."""
    q = v.copy()
    if mirror:
        q[:, 0] = np.abs(q[:, 0])
    return bump(np.sum(((q - np.asarray(c)) / np.asarray(r)) ** 2, axis=1))


def _vec(w: np.ndarray, d) -> np.ndarray:
    return w[:, None] * np.asarray(d, dtype=float)[None, :]


def identity_fields(v: np.ndarray, normals: np.ndarray, seed: int = 7, gain: float = 1.7) -> list[Field]:
    """Named displacement fields ``(name, sigma, field [V,3])`` on template vertices ``v``.

    The sigmas below are written for a head of height ~1.04 design units and scaled by ``gain``.
    """
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    sx = np.sign(x)
    one = np.ones_like(x)
    zero = np.zeros_like(x)
    front = smoothstep(0.05, 0.30, z)
    out: list[Field] = []

    def add(name: str, sigma: float, f: np.ndarray) -> None:
        out.append((name, gain * sigma, f))

    # --- global proportions -----------------------------------------------------------------
    # (Uniform scale is width + height + depth; it needs no field of its own.)
    add("width", 0.035, np.stack([x, zero, zero], -1))
    add("height", 0.018, np.stack([zero, y, zero], -1))
    add("depth", 0.03, np.stack([zero, zero, z], -1))
    add("cranium_height", 0.035, np.stack([zero, smoothstep(-0.1, 0.5, y) * y, zero], -1))
    back = smoothstep(0.05, -0.35, z) * smoothstep(-0.45, -0.05, y)
    add("cranium_length", 0.06, np.stack([zero, zero, z * back], -1))
    add("cranium_breadth", 0.045, np.stack([x * smoothstep(-0.15, 0.25, y), zero, zero], -1))
    fh = smoothstep(0.0, 0.3, y) * smoothstep(0.1, 0.35, z)
    add("forehead_slope", 0.08, np.stack([zero, zero, (y - 0.05) * fh], -1))
    add("forehead_width", 0.05, x[:, None] * _win(v, (0.0, 0.18, 0.30), (0.36, 0.16, 0.22), False)[:, None]
        * np.array([1.0, 0.0, 0.0]))
    lower = smoothstep(0.0, -0.3, y) * smoothstep(-0.95, -0.55, y)
    add("face_length", 0.035, np.stack([zero, (y + 0.02) * lower * smoothstep(-0.15, 0.15, z), zero], -1))
    jaw = smoothstep(-0.12, -0.36, y) * smoothstep(-0.75, -0.5, y) * smoothstep(-0.2, 0.05, z)
    add("jaw_width", 0.07, np.stack([x * jaw, zero, zero], -1))
    add("lower_face_depth", 0.012, np.stack([zero, zero, smoothstep(-0.15, -0.35, y) * front
                                              * smoothstep(-0.8, -0.5, y)], -1))
    neck = smoothstep(-0.45, -0.65, y)
    add("neck_thickness", 0.07, np.stack([x * neck, zero, (z + 0.05) * neck], -1))
    add("neck_forward", 0.012, np.stack([zero, zero, neck * smoothstep(-0.55, -0.95, y)], -1))
    add("crown", 0.010, _vec(_win(v, (0.0, 0.50, -0.04), (0.42, 0.32, 0.50), False), (0, 1, 0)))
    add("occiput", 0.01, _vec(_win(v, (0.0, 0.05, -0.44), (0.26, 0.22, 0.15), False), (0, 0, -1)))
    add("face_asymmetry", 0.02, np.stack([zero, x * front * smoothstep(-0.6, -0.3, y), zero], -1))

    # --- jaw, chin, cheeks ------------------------------------------------------------------------
    chin_c = (0.0, -0.47, 0.37)
    add("chin_width", 0.08, x[:, None] * _win(v, chin_c, (0.17, 0.11, 0.13), False)[:, None] * [1.0, 0, 0])
    add("chin_forward", 0.014, _vec(_win(v, chin_c, (0.17, 0.14, 0.17), False), (0, 0, 1)))
    add("chin_height", 0.010, _vec(_win(v, chin_c, (0.15, 0.12, 0.15), False), (0, -1, 0)))
    gon = (A.GONION[0], A.GONION[1], A.GONION[2])
    wg = _win(v, gon, (0.11, 0.11, 0.13))
    add("jaw_angle_flare", 0.010, np.stack([sx * wg, zero, zero], -1))
    add("jaw_angle_height", 0.010, _vec(wg, (0, 1, 0)))
    add("submental", 0.008, _vec(_win(v, (0.0, -0.55, 0.24), (0.16, 0.06, 0.16), False), (0, -1, 0)))
    wc = _win(v, (0.17, -0.20, 0.30), (0.10, 0.10, 0.12))
    add("cheek_fullness", 0.008, np.stack([0.7 * sx * wc, zero, 0.7 * wc], -1))
    wz = _win(v, (0.23, -0.07, 0.23), (0.09, 0.07, 0.10))
    add("cheekbones", 0.007, np.stack([0.6 * sx * wz, zero, 0.8 * wz], -1))
    add("midface_depth", 0.008, _vec(_win(v, (0.0, -0.12, 0.38), (0.26, 0.12, 0.14), False), (0, 0, 1)))
    wt = _win(v, (0.29, 0.10, 0.15), (0.07, 0.10, 0.12))
    add("temples", 0.006, np.stack([sx * wt, zero, zero], -1))

    # --- nose -------------------------------------------------------------------------------------
    wn = _win(v, (0.0, -0.10, 0.47), (0.11, 0.17, 0.14), False)
    add("nose_length", 0.07, (v - A.NASION) * np.array([0.0, 1.0, 0.6]) * wn[:, None])
    add("nose_width", 0.08, np.stack([x * wn, zero, zero], -1))
    add("nose_bridge", 0.007, _vec(_win(v, (0.0, -0.03, 0.45), (0.05, 0.08, 0.07), False), (0, 0, 1)))
    wtip = _win(v, (0.0, -0.14, 0.50), (0.085, 0.075, 0.085), False)
    add("nose_tip_forward", 0.008, _vec(wtip, (0, 0, 1)))
    add("nose_tip_height", 0.007, _vec(wtip, (0, 1, 0)))
    wa = _win(v, (0.05, -0.165, 0.44), (0.06, 0.055, 0.065))
    add("nostril_flare", 0.005, np.stack([sx * wa, zero, zero], -1))
    add("nose_hump", 0.005, _vec(_win(v, (0.0, -0.065, 0.48), (0.05, 0.065, 0.065), False), (0, 0, 1)))

    # --- eyes and brows ---------------------------------------------------------------------------
    eye_c = (A.EYE_X, A.EYE_Y, A.EYE_Z + 0.02)
    we = _win(v, eye_c, (0.09, 0.075, 0.10))
    add("eye_spacing", 0.006, np.stack([sx * we, zero, zero], -1))
    add("eye_height", 0.006, _vec(we, (0, 1, 0)))
    add("eye_depth", 0.006, _vec(we, (0, 0, -1)))
    ws = _win(v, eye_c, (0.075, 0.06, 0.09))
    rel = v - np.stack([sx * A.EYE_X, np.full_like(x, A.EYE_Y), np.full_like(x, A.EYE_Z)], -1)
    add("eye_size", 0.05, rel * np.array([1.0, 1.0, 0.3]) * ws[:, None])
    add("eye_tilt", 0.06, np.stack([-rel[:, 1] * sx, rel[:, 0] * sx, zero], -1) * ws[:, None])
    wb = _win(v, (0.13, 0.085, 0.38), (0.14, 0.07, 0.10))
    add("brow_ridge", 0.006, _vec(wb, (0, 0, 1)))
    add("brow_height", 0.006, _vec(wb, (0, 1, 0)))

    # --- mouth ------------------------------------------------------------------------------------
    add("upper_lip", 0.004, _vec(_win(v, (0.0, -0.275, 0.44), (0.11, 0.04, 0.07), False), (0, 0, 1)))
    add("lower_lip", 0.005, _vec(_win(v, (0.0, -0.322, 0.43), (0.11, 0.045, 0.07), False), (0, 0, 1)))
    wm = _win(v, (0.0, -0.30, 0.42), (0.17, 0.09, 0.13), False)
    add("mouth_width", 0.07, np.stack([x * wm, zero, zero], -1))
    add("mouth_height", 0.007, _vec(wm, (0, 1, 0)))
    add("mouth_forward", 0.007, _vec(_win(v, (0.0, -0.29, 0.42), (0.14, 0.10, 0.12), False), (0, 0, 1)))
    add("philtrum", 0.004, _vec(_win(v, (0.0, -0.235, 0.45), (0.06, 0.035, 0.05), False), (0, 1, 0)))

    # --- ears -------------------------------------------------------------------------------------
    ear_c = A.EAR_CENTER
    wear = _win(v, ear_c, (0.09, 0.17, 0.12))
    rel_e = v - np.stack([sx * ear_c[0], np.full_like(x, ear_c[1]), np.full_like(x, ear_c[2])], -1)
    add("ear_size", 0.06, rel_e * wear[:, None])
    add("ear_protrusion", 0.010, np.stack([sx * wear, zero, zero], -1))
    add("ear_height", 0.010, _vec(wear, (0, 1, 0)))
    add("ear_rotation", 0.06, np.stack([zero, -rel_e[:, 2], rel_e[:, 1]], -1) * wear[:, None])

    # --- seeded random smooth bumps along the normals (symmetric pairs) ---------------------------
    rng = np.random.default_rng(seed)
    candidates = v[(z > 0.12) & (y > -0.52) & (y < 0.12)]  # the face, not the skull
    for i in range(14):
        c = candidates[rng.integers(len(candidates))]
        r = rng.uniform(0.08, 0.15)
        w = _win(v, (abs(c[0]), c[1], c[2]), (r, r, r))
        add(f"random_{i:02d}", 0.004, normals * w[:, None])
    del one
    return out


def identity_basis(v: np.ndarray, normals: np.ndarray, seed: int = 7,
                   fields: Callable[..., list[Field]] = identity_fields) -> tuple[np.ndarray, list[str]]:
    """Orthogonal modes ``[K,V,3]`` (sorted by variance) and the names of the fields behind them."""
    named = fields(v, normals, seed)
    names = [n for n, _, _ in named]
    M = np.stack([sigma * f.reshape(-1) for _, sigma, f in named], axis=1)  # [3V, K]
    # Left singular vectors of M from the small Gram matrix (much faster than an SVD of M).
    evals, V = np.linalg.eigh(M.T @ M)
    order = np.argsort(evals)[::-1]
    evals, V = evals[order], V[:, order]
    keep = evals > 1e-6 * evals[0]  # drop directions the fields (nearly) do not span
    s = np.sqrt(evals[keep])
    U = (M @ V[:, keep]) / s[None, :]
    # Deterministic signs: the largest component of each mode is positive.
    big = np.argmax(np.abs(U), axis=0)
    U = U * np.sign(U[big, np.arange(U.shape[1])])[None, :]
    modes = (U * s[None, :]).T.reshape(len(s), -1, 3)
    return modes, names
