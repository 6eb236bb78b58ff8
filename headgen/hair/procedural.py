"""The built-in hair library: a few hairstyles generated from the head model's scalp.

Each style is a closed shell over part of the scalp: an inner layer just above the skin, an
outer layer offset along (smoothed) vertex normals by a per-style thickness profile that tapers
to almost nothing at the hairline, and a rim joining the two along the boundary. Some styles add
parts that do not follow the skin (the bun's knot). Styles, in head-height units of the head's
normalised frame (y up from eye level, z forward from the middle of the skull):

* ``short``: a close crop over the scalp above the ears and down to the nape;
* ``bob``: fuller hair reaching down the back and sides of the neck to the jaw line;
* ``long``: hair over the scalp and the back of the neck, thickening downward to the shoulders;
* ``bun``: a thin layer plus a knot at the back of the crown;
* ``mohawk``: a ridge along the midline, the sides shaved.

"none" (bald) is not a file: selectors add it as a candidate of its own.

Meshes are written once as OBJ files (vertices in head heights, the head model's frame) into
``$HEADGEN_CACHE_DIR/hair/<key>`` (default ``~/.cache/headgen/hair/<key>``) with a
``library.json``; the key hashes the head model (name, template, faces), :data:`GENERATOR_VERSION`
and this file's source, so a change to either rebuilds the library.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headgen.cache import cache_path
from headgen.errors import HeadgenError

GENERATOR_VERSION = 1
INNER_OFFSET = 0.004
"""Height of the shell's inner layer above the skin (head heights): no depth fighting with the head."""
MIN_THICKNESS = 0.002
"""Thickness at the hairline, where the profile has tapered off."""

STYLE_INFO: dict[str, dict[str, str]] = {
    "short": {"name": "short crop", "text": "short cropped hair"},
    "bob": {"name": "bob", "text": "a bob haircut reaching the jaw line"},
    "long": {"name": "long hair", "text": "long hair falling to the shoulders"},
    "bun": {"name": "bun", "text": "hair tied in a bun at the back of the head"},
    "mohawk": {"name": "mohawk", "text": "a mohawk, the sides of the head shaved"},
}
"""Built-in style names with their display name and description (written to library.json)."""


def cache_root() -> Path:
    """``$HEADGEN_CACHE_DIR/hair`` or ``~/.cache/headgen/hair``."""
    return cache_path("hair")


def head_key(head: Any) -> str:
    """What the built-in library depends on: the head's name, template and faces, the generator."""
    h = hashlib.sha256(f"{getattr(head, 'name', 'head')}:v{GENERATOR_VERSION}".encode())
    h.update(Path(__file__).read_bytes())
    for t in (head.v_template, head.faces):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.float64(head.scale).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- frame
@dataclass
class HeadFrame:
    """The head's normalised frame: ``p = (v - origin) / scale``."""

    origin: np.ndarray
    scale: float

    def local(self, v: np.ndarray) -> np.ndarray:
        return (v - self.origin) / self.scale


def head_frame(head: Any) -> HeadFrame:
    """Origin at eye level (pupils, else eye corners, else 0.5 head heights under the crown), x at
    the template's mean, z at the middle of the skull's length above eye level; unit = head height."""
    v = head.v_template.double().numpy()
    scale = float(head.scale)
    if not scale > 0:
        raise HeadgenError(f"head model {head.name}: scale (head height) must be > 0 to fit hair, got {scale}")
    eye_y = None
    try:
        lm = head.landmarks_mediapipe().double().numpy()
    except Exception:  # noqa: BLE001  (a head without landmarks still gets a frame)
        lm = None
    if lm is not None:
        for ids in ((468, 473), (33, 263)):
            pts = lm[list(ids)]
            if not np.isnan(pts).any():
                eye_y = float(pts[:, 1].mean())
                break
    if eye_y is None:
        eye_y = float(v[:, 1].max()) - 0.5 * scale
    above = v[v[:, 1] > eye_y]
    z_mid = 0.5 * float(above[:, 2].min() + above[:, 2].max()) if len(above) else float(v[:, 2].mean())
    return HeadFrame(np.array([float(v[:, 0].mean()), eye_y, z_mid]), scale)


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def scalp_region(head: Any, p: np.ndarray) -> np.ndarray:
    """The head's ``scalp`` region (the built-in head has one: everything but face, ears and neck),
    else a geometric estimate in the normalised frame: above the forehead, or behind the face and
    above the neck."""
    regions = {k: m.numpy() for k, m in getattr(head, "regions", {}).items()}
    if "scalp" in regions:
        return regions["scalp"].copy()
    scalp = (p[:, 1] > 0.26) | ((p[:, 2] < 0.05) & (p[:, 1] > -0.3))
    for name in ("face", "neck", "ears"):
        if name in regions:
            scalp &= ~regions[name]
    return scalp


def hairline(p: np.ndarray, front: float, back: float = -0.32) -> np.ndarray:
    """Above ``front`` in front of the ears (z > 0), above ``back`` behind them (z < -0.15)."""
    return p[:, 1] > front + (back - front) * np.clip(-p[:, 2] / 0.15, 0.0, 1.0)


def scalp_mask(head: Any, p: np.ndarray) -> np.ndarray:
    """Where short hair grows: the scalp above the ears in front, down to the nape behind."""
    return scalp_region(head, p) & hairline(p, 0.08)


# ---------------------------------------------------------------------------------------- shells
def _adjacency(num: int, faces: np.ndarray) -> Any:
    from scipy.sparse import coo_matrix

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num, num)).tocsr()
    a.data[:] = 1.0
    return a


def smooth_normals(v: np.ndarray, faces: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Area-weighted vertex normals averaged over their neighbours ``iterations`` times (an offset
    along them folds less in concave places than one along the raw normals)."""
    cross = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], cross)
    a = _adjacency(len(v), faces)
    for _ in range(iterations):
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        n = n + a @ n
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _boundary(faces: np.ndarray) -> np.ndarray:
    """Boundary half-edges [B,2]: directed edges of ``faces`` whose reverse is not one of them."""
    he = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    n = int(faces.max()) + 1 if len(faces) else 1
    return he[~np.isin(he[:, 1] * n + he[:, 0], he[:, 0] * n + he[:, 1])]


def _without_pinches(faces: np.ndarray, rounds: int = 20) -> np.ndarray:
    """Drop the faces around vertices where the boundary touches itself (two boundary loops through
    one vertex), where the rim would not be a manifold; repeated until there are none."""
    for _ in range(rounds):
        if len(faces) == 0:
            return faces
        starts = _boundary(faces)[:, 0]
        pinch = np.unique(starts)[np.bincount(starts)[np.unique(starts)] > 1]
        if len(pinch) == 0:
            return faces
        faces = faces[~np.isin(faces, pinch).any(1)]
    raise HeadgenError("hair shell: the style's mask has a ragged boundary that could not be cleaned")


def shell(v: np.ndarray, faces: np.ndarray, normals: np.ndarray, mask: np.ndarray, thickness: np.ndarray,
          taper: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed shell over the faces whose corners are all in ``mask``: inner layer at
    INNER_OFFSET, outer layer at INNER_OFFSET + thickness * smoothstep(geodesic distance to the
    boundary / taper) (at least MIN_THICKNESS), joined by a rim. Outward-facing, CCW winding."""
    from scipy.sparse.csgraph import dijkstra

    sub = _without_pinches(faces[mask[faces].all(1)])
    if len(sub) == 0:
        raise HeadgenError("hair shell: the style's mask covers no face of the head")
    used, local = np.unique(sub, return_inverse=True)
    local = local.reshape(-1, 3)
    pos, nrm, thick = v[used], normals[used], thickness[used]
    he = np.concatenate([local[:, [0, 1]], local[:, [1, 2]], local[:, [2, 0]]])
    boundary = _boundary(local)
    # Geodesic (edge-graph) distance to the boundary for the taper.
    from scipy.sparse import coo_matrix

    lengths = np.linalg.norm(pos[he[:, 0]] - pos[he[:, 1]], axis=1)
    graph = coo_matrix((lengths, (he[:, 0], he[:, 1])), shape=(len(used), len(used))).tocsr()
    if len(boundary):
        dist = dijkstra(graph, directed=False, indices=np.unique(boundary[:, 0]), min_only=True)
        ramp = _smoothstep(np.nan_to_num(dist, posinf=taper), 0.0, taper)
    else:
        ramp = np.ones(len(used))
    outer = pos + nrm * (INNER_OFFSET + np.maximum(thick * ramp, MIN_THICKNESS))[:, None]
    inner = pos + nrm * INNER_OFFSET
    n = len(used)
    a, b = boundary[:, 0], boundary[:, 1]
    rim = np.concatenate([np.stack([b, a, a + n], 1), np.stack([b, a + n, b + n], 1)])
    tri = np.concatenate([local, local[:, ::-1] + n, rim])
    return np.concatenate([outer, inner]), tri


def ellipsoid(center: np.ndarray, radii: np.ndarray, subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(sphere.vertices) * radii + center, np.asarray(sphere.faces)


def _join(*meshes: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    out_v, out_f, off = [], [], 0
    for v, f in meshes:
        out_v.append(v)
        out_f.append(f + off)
        off += len(v)
    return np.concatenate(out_v), np.concatenate(out_f)


# ---------------------------------------------------------------------------------------- styles
@dataclass
class _Head:
    v: np.ndarray
    """Template vertices in head heights (model frame / scale)."""
    faces: np.ndarray
    p: np.ndarray
    """Normalised-frame coordinates."""
    normals: np.ndarray
    scalp: np.ndarray
    """Where short hair grows (:func:`scalp_mask`)."""
    region: np.ndarray
    """The whole scalp region (:func:`scalp_region`), for styles that cover the sides."""
    regions: dict[str, np.ndarray]
    frame: HeadFrame


def _region(h: _Head, name: str) -> np.ndarray:
    return h.regions.get(name, np.zeros(len(h.v), dtype=bool))


def _short(h: _Head) -> tuple[np.ndarray, np.ndarray]:
    t = 0.022 + 0.012 * _smoothstep(h.p[:, 1], 0.0, 0.4)
    return shell(h.v, h.faces, h.normals, h.scalp, t, taper=0.03)


def _neck(h: _Head) -> np.ndarray:
    """The neck (not the shoulders of a head model that has them)."""
    neck = _region(h, "neck") if "neck" in h.regions else (h.p[:, 1] < -0.3)
    return neck & (np.abs(h.p[:, 0]) < 0.3)


def _bob(h: _Head) -> tuple[np.ndarray, np.ndarray]:
    # Over the ears and down the sides and back to the jaw line.
    p = h.p
    sides = (h.region | _region(h, "ears")) & hairline(p, -0.42, -0.45)
    mask = h.scalp | sides | (_neck(h) & (p[:, 1] > -0.46) & (p[:, 2] < 0.02))
    t = 0.06 + 0.03 * _smoothstep(-p[:, 1], 0.0, 0.4)
    return shell(h.v, h.faces, h.normals, mask, t, taper=0.04)


def _long(h: _Head) -> tuple[np.ndarray, np.ndarray]:
    # Over the ears, then down the back and sides of the neck, thickening toward the shoulders.
    p = h.p
    sides = (h.region | _region(h, "ears")) & hairline(p, -0.25, -0.45)
    mask = h.scalp | sides | (_neck(h) & (p[:, 1] > -0.85) & (p[:, 2] < 0.0))
    t = 0.055 + 0.16 * _smoothstep(-(p[:, 1] + 0.2), 0.0, 0.6)
    return shell(h.v, h.faces, h.normals, mask, t, taper=0.05)


def _bun(h: _Head) -> tuple[np.ndarray, np.ndarray]:
    base = shell(h.v, h.faces, h.normals, h.scalp, np.full(len(h.v), 0.012), taper=0.03)
    # The knot sits on the scalp at the back of the crown, 45 degrees above the horizontal.
    direction = np.array([0.0, math.sin(math.radians(45.0)), -math.cos(math.radians(45.0))])
    centre = np.array([0.0, 0.1, 0.0])
    rel = h.p - centre
    score = (rel @ direction) / np.maximum(np.linalg.norm(rel, axis=1), 1e-9)
    score[~h.scalp] = -np.inf
    anchor = h.v[int(np.argmax(score))]
    radii = np.array([0.12, 0.10, 0.10])
    knot = ellipsoid(anchor + direction * 0.08, radii)
    return _join(base, knot)


def _mohawk(h: _Head) -> tuple[np.ndarray, np.ndarray]:
    p = h.p
    mask = h.scalp & (np.abs(p[:, 0]) < 0.06)
    t = 0.11 * np.exp(-((p[:, 0] / 0.03) ** 2)) * (0.6 + 0.4 * _smoothstep(p[:, 1], -0.2, 0.4))
    return shell(h.v, h.faces, h.normals, mask, t, taper=0.02)


STYLES: dict[str, Callable[[_Head], tuple[np.ndarray, np.ndarray]]] = {
    "short": _short, "bob": _bob, "long": _long, "bun": _bun, "mohawk": _mohawk,
}


def generate_styles(head: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Style name -> (vertices [V,3] in head heights of the head model's frame, faces [F,3])."""
    frame = head_frame(head)
    v = head.v_template.double().numpy() / frame.scale
    faces = head.faces.numpy().astype(np.int64)
    p = frame.local(head.v_template.double().numpy())
    regions = {k: m.numpy() for k, m in getattr(head, "regions", {}).items()}
    scalp = scalp_mask(head, p)
    if not scalp.any():
        raise HeadgenError(f"head model {head.name}: no scalp vertices found; give the hair selector a library folder")
    h = _Head(v, faces, p, smooth_normals(v, faces), scalp, scalp_region(head, p), regions, frame)
    return {name: fn(h) for name, fn in STYLES.items()}


def write_builtin_library(head: Any, root: Path | None = None) -> Path:
    """The folder of the built-in library for ``head`` (generated and written on first use)."""
    from headgen.rundir import atomic_write, atomic_write_json

    folder = (root if root is not None else cache_root()) / head_key(head)
    index = folder / "library.json"
    if index.is_file() and all((folder / f"{name}.obj").is_file() for name in STYLES):
        return folder
    styles = generate_styles(head)
    for name, (verts, faces) in styles.items():
        atomic_write(folder / f"{name}.obj", lambda p, v=verts, f=faces: p.write_text(_obj_text(v, f)))
    meta = {"unit": "head-height", "generator": f"headgen.hair.procedural v{GENERATOR_VERSION}",
            "head": getattr(head, "name", "head"), "styles": {k: STYLE_INFO[k] for k in styles}}
    atomic_write_json(index, meta)  # written last: its presence means the folder is complete
    return folder


def _obj_text(v: np.ndarray, f: np.ndarray) -> str:
    import io

    buf = io.StringIO()
    buf.write("# headgen built-in hairstyle (head heights, head model frame)\n")
    np.savetxt(buf, v, fmt="v %.6f %.6f %.6f")
    np.savetxt(buf, f + 1, fmt="f %d %d %d")
    return buf.getvalue()


__all__ = ["GENERATOR_VERSION", "STYLES", "STYLE_INFO", "HeadFrame", "cache_root", "generate_styles", "head_frame",
           "head_key", "hairline", "scalp_mask", "scalp_region", "shell", "write_builtin_library"]
