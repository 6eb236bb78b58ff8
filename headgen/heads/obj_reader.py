"""A small OBJ reader (positions, texture coordinates, polygons with separate UV indices,
materials) and fan triangulation, for the head models' published meshes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headgen.errors import HeadgenError


@dataclass
class ObjMesh:
    """A parsed OBJ: positions, texture coordinates and polygons with separate UV indices."""

    vertices: np.ndarray
    """[V,3] float64."""
    uvs: np.ndarray
    """[T,2] float64."""
    polygons: list[tuple[list[int], list[int]]]
    """Per polygon: 0-based vertex indices and UV indices (empty if the polygon has none)."""
    materials: list[str]
    """Material names in order of first use."""
    polygon_material: np.ndarray
    """[P] int index into ``materials`` (-1 before any usemtl)."""


def read_obj(path: Path) -> ObjMesh:
    """Parse an OBJ file (v, vt, f with v/vt/vn tokens, usemtl; other statements are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise HeadgenError(f"OBJ file not found: {path}")
    verts: list[list[str]] = []
    uvs: list[list[str]] = []
    where: dict[str, list[int]] = {"v": [], "vt": []}  # line numbers, to point at a bad number
    polys: list[tuple[list[int], list[int]]] = []
    materials: list[str] = []
    poly_mat: list[int] = []
    current = -1
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line or line[0] == "#":
                continue
            tok = line.split()
            if not tok:
                continue
            head = tok[0]
            try:
                if head == "v":
                    if len(tok) < 4:
                        raise ValueError("a vertex needs 3 coordinates")
                    verts.append(tok[1:4])
                    where["v"].append(lineno)
                elif head == "vt":
                    if len(tok) < 3:
                        raise ValueError("a texture coordinate needs 2 values")
                    uvs.append(tok[1:3])
                    where["vt"].append(lineno)
                elif head == "f":
                    if len(tok) < 4:
                        raise ValueError("a face needs at least 3 corners")
                    vi, ti = [], []
                    for corner in tok[1:]:
                        parts = corner.split("/")
                        a = int(parts[0])
                        vi.append(a - 1 if a > 0 else len(verts) + a)
                        if len(parts) > 1 and parts[1]:
                            b = int(parts[1])
                            ti.append(b - 1 if b > 0 else len(uvs) + b)
                    if ti and len(ti) != len(vi):
                        raise ValueError("some corners have texture indices and some do not")
                    polys.append((vi, ti))
                    poly_mat.append(current)
                elif head == "usemtl":
                    name = tok[1] if len(tok) > 1 else ""
                    if name not in materials:
                        materials.append(name)
                    current = materials.index(name)
            except ValueError as exc:
                raise HeadgenError(
                    f"{path}:{lineno}: malformed OBJ line {line.strip()[:60]!r} ({exc})"
                ) from exc
    arrays = []
    for kind, rows, width in (("v", verts, 3), ("vt", uvs, 2)):
        try:
            arrays.append(np.array(rows, dtype=np.float64).reshape(-1, width))
        except ValueError as exc:
            bad = next(i for i, r in enumerate(rows) if not all(_is_float(x) for x in r))
            raise HeadgenError(
                f"{path}:{where[kind][bad]}: malformed OBJ line {kind} {' '.join(rows[bad])!r} ({exc})"
            ) from exc
    v, t = arrays
    for vi, ti in polys:
        if min(vi) < 0 or max(vi) >= len(v) or (ti and (min(ti) < 0 or max(ti) >= len(t))):
            raise HeadgenError(f"{path}: a face refers to a vertex or texture coordinate that does not exist")
    return ObjMesh(v, t, polys, materials, np.array(poly_mat, dtype=np.int64))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_obj_vertices(path: Path, expected: int | None = None) -> np.ndarray:
    """Only the vertex positions of an OBJ (fast path for identity/expression meshes)."""
    path = Path(path)
    if not path.is_file():
        raise HeadgenError(f"OBJ file not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = [ln[2:] for ln in fh if ln.startswith("v ")]
    try:
        flat = np.array(" ".join(lines).split(), dtype=np.float64)
        v = flat.reshape(len(lines), -1)[:, :3] if lines else np.zeros((0, 3))
    except ValueError as exc:
        raise HeadgenError(f"{path}: malformed vertex lines ({exc})") from exc
    if expected is not None and len(v) != expected:
        raise HeadgenError(
            f"{path}: {len(v)} vertices, expected {expected} (same topology as the neutral mesh)"
        )
    return v


def triangulate(obj: ObjMesh) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Fan-triangulate the polygons: (faces [F,3], uv_faces [F,3] or None, polygon of each face [F])."""
    faces, uv_faces, owner = [], [], []
    has_uv = all(ti for _, ti in obj.polygons) and len(obj.polygons) > 0
    for p, (vi, ti) in enumerate(obj.polygons):
        for k in range(1, len(vi) - 1):
            faces.append((vi[0], vi[k], vi[k + 1]))
            if has_uv:
                uv_faces.append((ti[0], ti[k], ti[k + 1]))
            owner.append(p)
    return (np.array(faces, dtype=np.int64).reshape(-1, 3),
            np.array(uv_faces, dtype=np.int64).reshape(-1, 3) if has_uv else None,
            np.array(owner, dtype=np.int64))
