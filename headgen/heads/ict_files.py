"""ICT-FaceKit's two on-disk forms, read into one :class:`IctSource`.

* The published ``FaceXModel`` folder (https://github.com/ICT-VGL/ICT-FaceKit): the neutral
  ``generic_neutral_mesh.obj`` (topology, UVs, 12 materials), ``identityNNN.obj`` meshes (any
  number, sorted by NNN; mode = mesh - neutral) and ``vertex_indices.json`` (``expressions`` names
  the expression meshes ``<name>.obj``; those present are loaded).
* The packed file headgen ships (``headgen/heads/data/ict-facekit/ict_facekit.npz``, made by
  ``scripts/pack_ict_facekit.py`` from the complete public model, with its LICENSE and CREDITS.md
  beside it). Keys: ``format`` (1), ``neutral`` float32 [V,3] (centimetres), ``uvs`` float32
  [T,2] (the published UDIM coordinates), polygons as ``poly_sizes`` [P], ``poly_vertices`` and
  ``poly_uvs`` (flat, 0-based), ``poly_material`` [P] into ``materials``, ``identity_names`` and
  ``identity_deltas`` float16 [K,V,3], ``expression_names`` and ``expression_deltas`` float16
  [E,V,3], ``index_json`` (the published vertex_indices.json), ``source`` and, when the packing
  script transferred them (:mod:`.ict_landmarks`), MediaPipe landmarks ``mediapipe_ids`` [L],
  ``mediapipe_vertices`` [L,3] (a skin triangle's vertices) and ``mediapipe_bary`` [L,3]. float16 deltas err
  about 3e-5 head heights; the neutral stays float32 (float16 would err 2.3e-4).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headgen.errors import HeadgenError
from headgen.heads.obj_reader import ObjMesh, read_obj, read_obj_vertices

PACKED_DIR = Path(__file__).with_name("data") / "ict-facekit"
"""Where the shipped copy lives (with LICENSE and CREDITS.md)."""
PACKED_FILE = PACKED_DIR / "ict_facekit.npz"
PACKED_FORMAT = 1
NEUTRAL = "generic_neutral_mesh.obj"
INDEX_FILE = "vertex_indices.json"


@dataclass
class IctSource:
    """What either form holds: the neutral mesh, the deltas and the published index sets."""

    obj: ObjMesh
    """The neutral mesh (float64 positions in centimetres, UDIM UVs, polygons, materials)."""
    identity: np.ndarray
    """[K,V,3] float32 identity modes (one PCA standard deviation each)."""
    expression_names: list[str]
    expressions: np.ndarray
    """[E,V,3] float32 expression deltas."""
    index: dict[str, Any] = field(default_factory=dict)
    """The published vertex_indices.json."""
    origin: str = ""
    """Where it was read from (for messages and meta)."""
    mediapipe: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """Transferred MediaPipe landmarks: (ids [L], triangle vertices [L,3], barycentrics [L,3])."""


def read_source(path: str | Path | None, num_identity: int | None = None) -> IctSource:
    """Read ``path`` (a FaceXModel folder or a packed ``.npz``; None: the shipped copy)."""
    if path is None:
        if not PACKED_FILE.is_file():
            raise HeadgenError(
                f"the ICT-FaceKit copy shipped with headgen is missing ({PACKED_FILE}); reinstall headgen, "
                "or rebuild it: python scripts/pack_ict_facekit.py ../shared/data/ict-facekit-full"
            )
        return read_packed(PACKED_FILE, num_identity)
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".npz":
        return read_packed(p, num_identity)
    if p.is_dir() and (p / "ict_facekit.npz").is_file() and not (p / NEUTRAL).is_file():
        return read_packed(p / "ict_facekit.npz", num_identity)
    return read_facex_folder(p, num_identity)


def _check_count(num_identity: int | None, available: int, where: str) -> int:
    if num_identity is None:
        return available
    if num_identity < 0:
        raise HeadgenError(f"num_identity must be >= 0, got {num_identity}")
    if num_identity > available:
        raise HeadgenError(f"num_identity={num_identity} but {where} has {available} identity modes")
    return num_identity


# -------------------------------------------------------------------------------- FaceXModel folder
def _identity_files(folder: Path) -> list[Path]:
    found = []
    for p in folder.iterdir():
        m = re.fullmatch(r"identity(\d+)\.obj", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HeadgenError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(index, dict) or not isinstance(index.get("expressions", []), list):
        raise HeadgenError(f"{path}: expected an object with an 'expressions' list")
    return index


def read_facex_folder(folder: Path, num_identity: int | None = None) -> IctSource:
    """The published FaceXModel folder (see the module docstring)."""
    if not folder.is_dir():
        raise HeadgenError(
            f"ICT-FaceKit folder not found: {folder}; leave head.path unset for the copy shipped with "
            "headgen, or set it to the FaceXModel folder of https://github.com/ICT-VGL/ICT-FaceKit "
            "(it holds generic_neutral_mesh.obj) or to a file made by scripts/pack_ict_facekit.py"
        )
    neutral_path = folder / NEUTRAL
    if not neutral_path.is_file():
        raise HeadgenError(f"{folder} is not an ICT-FaceKit FaceXModel folder: {NEUTRAL} is missing")
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise HeadgenError(f"{folder}: {INDEX_FILE} is missing (it names the expression meshes)")
    index = read_index(index_path)
    obj = read_obj(neutral_path)
    V = len(obj.vertices)
    files = _identity_files(folder)
    files = files[: _check_count(num_identity, len(files), str(folder))]
    identity = (np.stack([read_obj_vertices(p, V) - obj.vertices for p in files]) if files
                else np.zeros((0, V, 3))).astype(np.float32)
    names, shapes = [], []
    for name in index.get("expressions", []):
        p = folder / f"{name}.obj"
        if p.is_file():
            names.append(str(name))
            shapes.append(read_obj_vertices(p, V) - obj.vertices)
    expressions = (np.stack(shapes) if shapes else np.zeros((0, V, 3))).astype(np.float32)
    return IctSource(obj, identity, names, expressions, index, str(folder))


# -------------------------------------------------------------------------------- packed file
def write_packed(path: Path, *, neutral: np.ndarray, obj: ObjMesh, identity_names: list[str],
                 identity_deltas: np.ndarray, expression_names: list[str], expression_deltas: np.ndarray,
                 index_json: str, source: str,
                 mediapipe: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Path:
    """Write the packed file (see the module docstring); returns its path."""
    sizes = np.array([len(vi) for vi, _ in obj.polygons], dtype=np.uint8)
    if any(len(ti) != len(vi) for vi, ti in obj.polygons):
        raise HeadgenError("write_packed: every polygon needs texture indices")
    arrays = {
        "format": np.array(PACKED_FORMAT),
        "neutral": np.asarray(neutral, dtype=np.float32),
        "uvs": obj.uvs.astype(np.float32),
        "poly_sizes": sizes,
        "poly_vertices": np.concatenate([vi for vi, _ in obj.polygons]).astype(np.int32),
        "poly_uvs": np.concatenate([ti for _, ti in obj.polygons]).astype(np.int32),
        "poly_material": obj.polygon_material.astype(np.int16),
        "materials": np.array(obj.materials, dtype=str),
        "identity_names": np.array(identity_names, dtype=str),
        "identity_deltas": np.asarray(identity_deltas).astype(np.float16),
        "expression_names": np.array(expression_names, dtype=str),
        "expression_deltas": np.asarray(expression_deltas).astype(np.float16),
        "index_json": np.array(index_json),
        "source": np.array(source),
    }
    if mediapipe is not None:
        ids, verts, bary = mediapipe
        arrays.update(mediapipe_ids=np.asarray(ids, np.int32), mediapipe_vertices=np.asarray(verts, np.int32),
                      mediapipe_bary=np.asarray(bary, np.float32))
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def read_packed(path: Path, num_identity: int | None = None) -> IctSource:
    """The packed file (see the module docstring)."""
    try:
        z = np.load(path, allow_pickle=False)
        fmt = int(z["format"])
        if fmt != PACKED_FORMAT:
            raise HeadgenError(f"{path}: packed ICT-FaceKit format {fmt}, this headgen reads {PACKED_FORMAT}; "
                               "rebuild it with scripts/pack_ict_facekit.py")
        sizes = z["poly_sizes"].astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        pv, pu = z["poly_vertices"].astype(np.int64), z["poly_uvs"].astype(np.int64)
        polygons = [(pv[a:b].tolist(), pu[a:b].tolist()) for a, b in zip(starts[:-1], starts[1:])]
        neutral = z["neutral"].astype(np.float64)
        obj = ObjMesh(neutral, z["uvs"].astype(np.float64), polygons, [str(m) for m in z["materials"]],
                      z["poly_material"].astype(np.int64))
        k = _check_count(num_identity, len(z["identity_names"]), str(path))
        identity = z["identity_deltas"][:k].astype(np.float32)
        expressions = z["expression_deltas"].astype(np.float32)
        names = [str(n) for n in z["expression_names"]]
        index = json.loads(str(z["index_json"]))
        mediapipe = None
        if "mediapipe_ids" in z.files:
            mediapipe = (z["mediapipe_ids"].astype(np.int64), z["mediapipe_vertices"].astype(np.int64),
                         z["mediapipe_bary"].astype(np.float64))
    except HeadgenError:
        raise
    except (KeyError, ValueError, OSError, EOFError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
        raise HeadgenError(
            f"{path} is not a packed ICT-FaceKit file ({type(exc).__name__}: {exc}); rebuild it with "
            "python scripts/pack_ict_facekit.py ../shared/data/ict-facekit-full"
        ) from exc
    V = len(neutral)
    if identity.shape[1:] != (V, 3) or expressions.shape[1:] != (V, 3) or len(names) != len(expressions):
        raise HeadgenError(f"{path}: delta arrays do not match the neutral mesh's {V} vertices")
    return IctSource(obj, identity, names, expressions, index, str(path), mediapipe)
