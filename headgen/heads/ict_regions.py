"""The built-in head's four regions (face, scalp, ears, neck) on ICT-FaceKit's skin.

The demo prior paints its targets by region (hair on the scalp, beard in the face below the
nose) and the built-in hair library grows hair on the scalp, so ICT needs the same partition of
its skin. It comes from ICT's own landmarks and published UV layout, in the normalised frame
(head height 1, chin at y = -0.5, the face toward +z):

* ears: each outer ear is a lobe at a side edge of ICT's face tile (u within 0.10 of the edge, v
  in 0.47-0.71); every vertex off the side of the skull (|x| > 0.36) lies in it.
* neck: below the jaw line in front (the 17 jaw landmarks, interpolated in |x|, at most -0.27),
  below -0.30 behind the ears, and everything under y = -0.56 (the built-in head's rule).
* face: inside the face oval seen from the head's centre: the jaw landmarks closed by an arc over
  the forehead at the hairline, ``HAIRLINE`` above eye level (face thirds: the upper third, brows
  to hairline, is about as tall as the nose); the mouth and eye sockets are face too, and so is
  the thin band the oval leaves above the neck along the jaw (below eye level, in front).
* scalp: the rest of the skin (above the hairline, the top and back of the head down to the
  nape); parts (eyes, teeth, ...) belong to no region.
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolyPath

from headgen.heads.procedural.mesh import angles

HAIRLINE = 0.33
"""Height of the front hairline above eye level, in head heights."""
EAR_U, EAR_V = 0.10, (0.47, 0.71)


def ict_regions(v: np.ndarray, skin: np.ndarray, face_tile_uv: np.ndarray, sockets: np.ndarray,
                jaw: np.ndarray, eye_y: float) -> dict[str, np.ndarray]:
    """Region masks [V] (see the module docstring).

    ``v`` [V,3] normalised template; ``skin`` [V] the skin's vertices; ``face_tile_uv`` [V,2] each
    vertex's UV in ICT's face tile (NaN elsewhere); ``sockets`` [V] mouth and eye sockets; ``jaw``
    [17,3] the Multi-PIE jaw landmarks (ear to ear through the chin); ``eye_y`` eye level.
    """
    x, y, z = np.abs(v[:, 0]), v[:, 1], v[:, 2]
    u, w = face_tile_uv[:, 0], face_tile_uv[:, 1]
    with np.errstate(invalid="ignore"):
        ears = skin & (np.minimum(u, 1 - u) < EAR_U) & (w > EAR_V[0]) & (w < EAR_V[1])

    order = np.argsort(np.abs(jaw[:, 0]))
    jaw_y = np.interp(x, np.abs(jaw[order, 0]), jaw[order, 1])
    t = np.clip((z + 0.12) / 0.12, 0.0, 1.0)
    boundary = t * np.minimum(jaw_y - 0.012, -0.27) + (1 - t) * -0.30
    neck = skin & ((y < boundary) | (y < -0.56)) & ~sockets

    # Face oval: the jaw, then an arc over the forehead at the hairline, each point put on the
    # skin (the frontmost skin vertex nearest in x and y).
    half = float(np.abs(jaw[[0, -1], 0]).mean())
    base = float(jaw[[0, -1], 1].mean())
    s = np.linspace(0.0, np.pi, 25)[1:-1]
    arc_xy = np.stack([half * np.cos(s), base + (eye_y + HAIRLINE - base) * np.sin(s)], -1)
    front = np.nonzero(skin & (v[:, 2] > 0))[0]
    nearest = ((v[front, None, :2] - arc_xy[None]) ** 2).sum(-1).argmin(0)
    left_to_right = jaw if jaw[0, 0] < jaw[-1, 0] else jaw[::-1]
    oval = np.concatenate([left_to_right, v[front[nearest]]])  # the arc runs from +x back to -x
    center = np.array([0.0, eye_y - 0.1, 0.0])
    psi_o, phi_o = angles(oval - center)
    psi_v, phi_v = angles(v - center)
    inside = PolyPath(np.stack([phi_o, psi_o], -1)).contains_points(np.stack([phi_v, psi_v], -1))
    face = skin & ((inside & (np.abs(phi_v) < 120.0)) | sockets) & ~neck & ~ears
    # The thin band the oval leaves above the neck along the jaw is cheek and jaw skin, not scalp.
    band = skin & ~(face | neck | ears) & (v[:, 1] < eye_y - 0.05) & (v[:, 2] > 0.05)
    face |= band
    scalp = skin & ~(face | neck | ears)
    return {"face": face, "scalp": scalp, "ears": ears, "neck": neck}
