"""ICT-FaceKit (MIT licence) loader: a ``FaceXModel`` folder as distributed.

Files read:

* ``generic_neutral_mesh.obj``: the neutral head (26719 vertices; quads and triangles with
  separate UV indices and UV seams; 12 material groups). Polygons are fan-triangulated
  ((0,1,2), (0,2,3) for quads), keeping their winding.
* ``identityNNN.obj`` (any number; sorted by NNN): full meshes, mode = mesh - neutral, with
  coefficients ~ N(0, 1).
* ``vertex_indices.json``: ``expressions`` names the expression meshes ``<name>.obj`` (those
  present are loaded as deltas from the neutral), ``idx_to_landmark_verts`` the 68 Multi-PIE
  landmarks (embedded under their usual MediaPipe ids: a partial, approximate MediaPipe layout).

``crop_to_head`` keeps vertices [0, 14062): face, head and neck, mouth and eye sockets, the part
DreamFace uses (the gums, teeth, eyeballs, eyelashes etc. are dropped). Units are centimetres;
``normalize`` maps the model to the built-in head's frame (head height 1, see
:meth:`HeadModel.normalized`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headgen.errors import HeadgenError
from headgen.heads.base import HeadModel, LazyHead
from headgen.registry import register

HEAD_VERTICES = 14062
"""Vertices [0, 14062) are face, head and neck, mouth socket and eye sockets."""

NEUTRAL = "generic_neutral_mesh.obj"
INDEX_FILE = "vertex_indices.json"

# Vertex ranges of the ICT geometries (README of ICT-FaceKit), exclusive ends.
GEOMETRY_RANGES: dict[str, tuple[int, int]] = {
    "face": (0, 9409),
    "head_neck": (9409, 11248),
    "mouth_socket": (11248, 13294),
    "eye_socket_left": (13294, 13678),
    "eye_socket_right": (13678, 14062),
    "gums_tongue": (14062, 17039),
    "teeth": (17039, 21451),
    "eyeball_left": (21451, 23021),
    "eyeball_right": (23021, 24591),
    "lacrimal_fluid": (24591, 24999),
    "eye_blend": (24999, 25047),
    "eye_occlusion": (25047, 25351),
    "eyelashes": (25351, 26719),
}

# Multi-PIE / dlib 68-point order -> the MediaPipe id at (about) the same feature.
MULTIPIE68_TO_MEDIAPIPE = (
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,  # jaw
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows (right outer -> inner, left inner -> outer)
    168, 197, 5, 4, 98, 97, 2, 326, 327,  # nose bridge, nose base
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips
)


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


def _identity_files(folder: Path) -> list[Path]:
    found = []
    for p in folder.iterdir():
        m = re.fullmatch(r"identity(\d+)\.obj", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def load_ict_facekit(path: str | Path, crop_to_head: bool = True, num_identity: int | None = None,
                     normalize: bool = True) -> HeadModel:
    """Load an ICT-FaceKit ``FaceXModel`` folder (see the module docstring)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise HeadgenError(
            f"ICT-FaceKit folder not found: {folder}; set head.path to the FaceXModel folder of "
            "https://github.com/ICT-VGL/ICT-FaceKit (it holds generic_neutral_mesh.obj)"
        )
    neutral_path = folder / NEUTRAL
    if not neutral_path.is_file():
        raise HeadgenError(f"{folder} is not an ICT-FaceKit FaceXModel folder: {NEUTRAL} is missing")
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise HeadgenError(f"{folder}: {INDEX_FILE} is missing (it names the expression meshes)")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise HeadgenError(f"{index_path}: not valid JSON ({exc})") from exc
    if not isinstance(index, dict) or not isinstance(index.get("expressions", []), list):
        raise HeadgenError(f"{index_path}: expected an object with an 'expressions' list")

    obj = read_obj(neutral_path)
    V = len(obj.vertices)
    faces, uv_faces, owner = triangulate(obj)
    if uv_faces is None:
        raise HeadgenError(f"{neutral_path}: faces have no texture indices (the ICT mesh is UV-mapped)")

    id_files = _identity_files(folder)
    if num_identity is not None:
        if num_identity < 0:
            raise HeadgenError(f"num_identity must be >= 0, got {num_identity}")
        if num_identity > len(id_files):
            raise HeadgenError(
                f"num_identity={num_identity} but {folder} has {len(id_files)} identityNNN.obj files"
            )
        id_files = id_files[:num_identity]
    identity = np.stack([read_obj_vertices(p, V) - obj.vertices for p in id_files]) if id_files \
        else np.zeros((0, V, 3))
    names, shapes = [], []
    for name in index.get("expressions", []):
        p = folder / f"{name}.obj"
        if p.is_file():
            names.append(str(name))
            shapes.append(read_obj_vertices(p, V) - obj.vertices)
    expressions = np.stack(shapes) if shapes else np.zeros((0, V, 3))

    lm_verts = [int(i) for i in index.get("idx_to_landmark_verts", [])]
    if lm_verts and len(lm_verts) != len(MULTIPIE68_TO_MEDIAPIPE):
        raise HeadgenError(f"{index_path}: idx_to_landmark_verts has {len(lm_verts)} entries, expected 68")
    if any(not 0 <= i < V for i in lm_verts):
        raise HeadgenError(f"{index_path}: idx_to_landmark_verts refers to vertices outside the mesh")

    v = obj.vertices
    regions: dict[str, np.ndarray] = {}
    for name, (a, b) in GEOMETRY_RANGES.items():
        if a < V:
            m = np.zeros(V, dtype=bool)
            m[a:min(b, V)] = True
            regions[name] = m
    if crop_to_head:
        if V < HEAD_VERTICES:
            raise HeadgenError(f"{neutral_path}: {V} vertices, cannot crop to the first {HEAD_VERTICES}")
        keep_f = np.all(faces < HEAD_VERTICES, axis=1)
        faces, uv_faces, owner = faces[keep_f], uv_faces[keep_f], owner[keep_f]
        used_uv, uv_faces = np.unique(uv_faces, return_inverse=True)
        uv_faces = uv_faces.reshape(-1, 3)
        uvs = obj.uvs[used_uv]
        v = v[:HEAD_VERTICES]
        identity, expressions = identity[:, :HEAD_VERTICES], expressions[:, :HEAD_VERTICES]
        regions = {k: m[:HEAD_VERTICES] for k, m in regions.items() if m[:HEAD_VERTICES].any()}
        V = HEAD_VERTICES
    else:
        uvs = obj.uvs

    # Landmarks: one corner of a face that uses the vertex, barycentric (1, 0, 0).
    lm_faces, lm_bary, lm_ids = [], [], []
    for mp_id, vi in zip(MULTIPIE68_TO_MEDIAPIPE, lm_verts):
        rows, cols = np.nonzero(faces == vi)
        if rows.size == 0:
            continue
        b = np.zeros(3)
        b[cols[0]] = 1.0
        lm_faces.append(rows[0])
        lm_bary.append(b)
        lm_ids.append(mp_id)

    head_part = v[: min(V, HEAD_VERTICES)]
    crown = float(head_part[:, 1].max())
    chin = v[lm_verts[8]] if lm_verts else None
    scale = crown - float(chin[1]) if chin is not None else float(np.ptp(head_part[:, 1]))
    model = HeadModel(
        name="ict-facekit",
        v_template=v,
        faces=faces,
        identity_basis=identity,
        expression_basis=expressions,
        expression_names=names,
        landmark_faces=np.array(lm_faces, dtype=np.int64),
        landmark_bary=np.array(lm_bary, dtype=np.float32).reshape(-1, 3),
        landmark_ids=np.array(lm_ids, dtype=np.int64),
        uvs=uvs,
        uv_faces=uv_faces,
        regions=regions,
        scale=scale,
        units="cm",
        meta={"source": str(folder), "materials": obj.materials, "face_material": obj.polygon_material[owner],
              "cropped": bool(crop_to_head)},
    )
    if normalize:
        if chin is None:
            raise HeadgenError(f"{index_path}: normalize needs idx_to_landmark_verts (the chin landmark)")
        model = model.normalized(chin=chin)
    return model


@register("head", "ict-facekit")
class IctFaceKitHead(LazyHead):
    """ICT-FaceKit head model read from a FaceXModel folder (MIT licence)."""

    @dataclass
    class Config:
        path: str
        """The FaceXModel folder (holds generic_neutral_mesh.obj, identityNNN.obj, vertex_indices.json)."""
        crop_to_head: bool = True
        """Keep only vertices [0, 14062): face, head, neck, mouth and eye sockets (as DreamFace does)."""
        num_identity: int | None = None
        """Load only the first N identity meshes (None: all present)."""
        normalize: bool = True
        """Scale and centre to the built-in head's frame (head height 1); false keeps centimetres."""

    def build(self) -> HeadModel:
        return load_ict_facekit(self.cfg.path, self.cfg.crop_to_head, self.cfg.num_identity, self.cfg.normalize)
