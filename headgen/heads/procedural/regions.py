"""Region masks of the built-in head: face, scalp, ears, neck (a partition of the vertices)."""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolyPath

from headgen.heads.procedural import anatomy as A
from headgen.heads.procedural.mesh import angles
from headgen.heads.procedural.sdf import rot_x, rot_y


def neck_mask(v: np.ndarray) -> np.ndarray:
    """Below the jaw line in front, below the skull base behind."""
    x, y, z = np.abs(v[:, 0]), v[:, 1], v[:, 2]
    jaw = -0.525 + 1.9 * x * x - 0.15 * (z - 0.37) - 0.012
    back = -0.30 + 0.0 * z
    t = np.clip((z + 0.12) / 0.12, 0.0, 1.0)  # 0 behind the ramus, 1 from z = 0 forward
    boundary = np.minimum(t * jaw + (1 - t) * back, -0.27)
    return (y < boundary) | (y < -0.56)


def ear_mask(v: np.ndarray) -> np.ndarray:
    """Vertices of the outer ears (inside each ear's outline, off the side of the head)."""
    q = v.copy()
    q[:, 0] = np.abs(q[:, 0])
    frame = rot_y(-4.0) @ rot_x(-12.0)
    local = (q - A.EAR_CENTER) @ frame
    r = (local[:, 1] / (A.EAR_HALF_HEIGHT * 1.05)) ** 2 + (local[:, 2] / (A.EAR_HALF_WIDTH * 1.10)) ** 2
    return (r < 1.0) & (q[:, 0] > 0.29)


def face_mask(v: np.ndarray, oval: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Vertices inside the face oval (a closed loop of points [M,3]) as seen from ``center``."""
    psi_o, phi_o = angles(oval - center)
    psi_v, phi_v = angles(v - center)
    inside = PolyPath(np.stack([phi_o, psi_o], -1)).contains_points(np.stack([phi_v, psi_v], -1))
    return inside & (np.abs(phi_v) < 120.0)


def region_masks(v: np.ndarray, oval: np.ndarray, center: np.ndarray) -> dict[str, np.ndarray]:
    neck = neck_mask(v)
    ears = ear_mask(v) & ~neck
    face = face_mask(v, oval, center) & ~neck & ~ears
    scalp = ~(neck | ears | face)
    return {"face": face, "scalp": scalp, "ears": ears, "neck": neck}
