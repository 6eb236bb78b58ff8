"""MediaPipe-topology landmarks for ICT-FaceKit, transferred once from the built-in head.

ICT publishes the 68 Multi-PIE landmarks only; landmark maps (the ControlNet recipes' control
images) draw MediaPipe's face-mesh contours, 128 points plus pupils, which the built-in head has.
Both heads live in the same normalised frame (head height 1, chin at y = -0.5) and share 64 of
those points (the Multi-PIE ones under their MediaPipe ids), so the built-in head's landmarks are
carried over by a thin-plate-spline warp fitted on the shared 64 (built-in -> ICT positions,
scipy's RBFInterpolator) and snapped to the nearest point of ICT's skin. ICT's own 68 stay exact.
The result is stored in the packed file (``scripts/pack_ict_facekit.py``) as vertex triples and
barycentric weights, so loading needs no built-in head. The pupils (468, 473) are not carried
over: ICT's pupils are on its eyeballs, not on the skin that landmarks are embedded in, and the
nearest skin point (the lid margin) is 3 mm off, so ICT's landmark maps draw no pupil squares.
"""


from __future__ import annotations

import numpy as np

NOT_ON_SKIN = (468, 469, 470, 471, 472, 473, 474, 475, 476, 477)
"""MediaPipe's iris points, which lie on the eyeballs."""


def closest_points(points: np.ndarray, v: np.ndarray, faces: np.ndarray, candidates: int = 64
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For each point [P,3], the nearest triangle among those around its ``candidates`` nearest
    vertices: (triangle index [P], barycentric weights [P,3]) of the closest point on it."""
    from scipy.spatial import cKDTree

    _, near = cKDTree(v).query(points, k=min(candidates, len(v)))
    on_vertex: dict[int, list[int]] = {}
    for f, tri in enumerate(faces):
        for i in tri:
            on_vertex.setdefault(int(i), []).append(f)
    best_f = np.zeros(len(points), dtype=np.int64)
    best_b = np.zeros((len(points), 3))
    for p, (q, nv) in enumerate(zip(points, np.atleast_2d(near))):
        tris = sorted({f for i in nv for f in on_vertex.get(int(i), [])})
        if not tris:
            raise ValueError("closest_points: no triangle uses the nearest vertices")
        bary = np.array([_closest_bary(q, *v[faces[f]]) for f in tris])
        pos = np.einsum("tk,tkc->tc", bary, v[faces[tris]])
        k = int(np.argmin(((pos - q) ** 2).sum(-1)))
        best_f[p], best_b[p] = tris[k], bary[k]
    return best_f, best_b


def _closest_bary(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights of the point of triangle abc closest to p (Ericson, Real-Time Collision
    Detection, 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = ab @ ap, ac @ ap
    if d1 <= 0 and d2 <= 0:
        return np.array([1.0, 0.0, 0.0])
    bp = p - b
    d3, d4 = ab @ bp, ac @ bp
    if d3 >= 0 and d4 <= d3:
        return np.array([0.0, 1.0, 0.0])
    vc = d1 * d4 - d3 * d2
    if vc <= 0 and d1 >= 0 and d3 <= 0:
        t = d1 / (d1 - d3)
        return np.array([1 - t, t, 0.0])
    cp = p - c
    d5, d6 = ab @ cp, ac @ cp
    if d6 >= 0 and d5 <= d6:
        return np.array([0.0, 0.0, 1.0])
    vb = d5 * d2 - d1 * d6
    if vb <= 0 and d2 >= 0 and d6 <= 0:
        t = d2 / (d2 - d6)
        return np.array([1 - t, 0.0, t])
    va = d3 * d6 - d5 * d4
    if va <= 0 and (d4 - d3) >= 0 and (d5 - d6) >= 0:
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return np.array([0.0, 1 - t, t])
    denom = 1.0 / (va + vb + vc)
    v_, w_ = vb * denom, vc * denom
    return np.array([1 - v_ - w_, v_, w_])


def transfer_landmarks(source_ids: np.ndarray, source_pos: np.ndarray, shared_ids: np.ndarray,
                       shared_pos: np.ndarray, v: np.ndarray, faces: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carry landmarks ``source_ids`` at ``source_pos`` (the built-in head, normalised frame) onto
    the mesh ``v``/``faces`` (ICT's skin, the same frame), warping by a thin-plate spline fitted on
    the ``shared_ids`` whose positions on the mesh are ``shared_pos``. Landmarks already in
    ``shared_ids`` are skipped. Returns (ids [L], triangle vertex triples [L,3], barycentrics [L,3])."""
    from scipy.interpolate import RBFInterpolator

    src = {int(i): p for i, p in zip(source_ids, source_pos)}
    common = [i for i in shared_ids.tolist() if i in src]
    if len(common) < 10:
        raise ValueError(f"transfer_landmarks: only {len(common)} shared landmarks; need at least 10")
    dst = {int(i): p for i, p in zip(shared_ids, shared_pos)}
    warp = RBFInterpolator(np.array([src[i] for i in common]), np.array([dst[i] for i in common]),
                           kernel="thin_plate_spline", smoothing=1e-6)
    todo = [i for i in src if i not in dst and i not in NOT_ON_SKIN]
    moved = warp(np.array([src[i] for i in todo]))
    tri, bary = closest_points(moved, v, faces)
    return np.array(todo, dtype=np.int64), faces[tri], bary
