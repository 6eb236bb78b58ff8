"""FLAME loader (the model's licence forbids redistribution: point ``path`` at your own copy).

``generic_model.pkl`` is a Python 2 pickle whose arrays are often ``chumpy`` objects. It is read
with a restricted unpickler, without chumpy: any ``chumpy.*`` class is replaced by a stand-in
that keeps the object's state, and the array it holds (state ``x``) is taken out afterwards;
numpy arrays, ``scipy.sparse`` CSC/CSR matrices (``J_regressor``) and Python builtins needed for
object reconstruction are allowed, anything else is refused. The file must contain
``v_template [V,3]``, ``f [F,3]`` and ``shapedirs [V,3,S+E]`` (the first ``shape_components``
are identity modes, the rest expressions; FLAME 2020/2023 use 300 + 100).

A MediaPipe landmark embedding (``.npz`` with ``lmk_face_idx [L]``, ``lmk_b_coords [L,3]``,
``landmark_indices [L]``, as in the public FLAME MediaPipe embedding) and a UV template (an OBJ
with ``vt`` and ``f v/vt`` lines, e.g. FLAME's ``head_template.obj``) are optional. Units are
metres; ``normalize`` maps the model to the built-in head's frame (needs landmark 152, the chin).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headgen.errors import HeadgenError
from headgen.heads.base import HeadModel, LazyHead
from headgen.registry import register


class ChumpyStandIn:
    """Takes the place of a pickled chumpy object; its state is kept in ``__dict__``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({k.decode() if isinstance(k, bytes) else k: v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state

    def to_array(self, where: str) -> np.ndarray:
        if "x" in self.__dict__:
            return np.asarray(_plain(self.__dict__["x"], where))
        raise HeadgenError(
            f"{where}: a chumpy expression object (not a plain Ch array) cannot be read without chumpy; "
            "re-save the model with plain numpy arrays"
        )


def _numpy_module(name: str) -> str:
    # numpy 2 moved numpy.core to numpy._core (numpy.core remains a deprecated alias).
    if name.startswith("numpy.core"):
        try:
            import numpy._core  # noqa: F401

            return "numpy._core" + name[len("numpy.core"):]
        except ImportError:  # numpy < 2
            return name
    return name


_ALLOWED: dict[tuple[str, str], str] = {
    ("numpy", "ndarray"): "numpy",
    ("numpy", "dtype"): "numpy",
    ("numpy.core.multiarray", "_reconstruct"): "numpy.core.multiarray",
    ("numpy._core.multiarray", "_reconstruct"): "numpy._core.multiarray",
    ("numpy.core.multiarray", "scalar"): "numpy.core.multiarray",
    ("numpy._core.multiarray", "scalar"): "numpy._core.multiarray",
    ("numpy.core.numeric", "_frombuffer"): "numpy.core.numeric",
    ("numpy._core.numeric", "_frombuffer"): "numpy._core.numeric",
    ("copy_reg", "_reconstructor"): "copyreg",
    ("copyreg", "_reconstructor"): "copyreg",
    ("__builtin__", "object"): "builtins",
    ("builtins", "object"): "builtins",
    ("__builtin__", "set"): "builtins",
    ("builtins", "set"): "builtins",
    # Protocol-2 pickles written by Python 3 store byte strings as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): "_codecs",
}
_SPARSE = {"csc_matrix", "csr_matrix", "coo_matrix"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for model files: numpy, scipy.sparse and chumpy stand-ins only."""

    def __init__(self, file: Any, where: str):
        super().__init__(file, encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStandIn
        if name in _SPARSE and (module == "scipy.sparse" or module.startswith("scipy.sparse.")):
            import scipy.sparse

            return getattr(scipy.sparse, name)
        target = _ALLOWED.get((module, name))
        if target is None:
            raise HeadgenError(
                f"{self.where}: refusing to load '{module}.{name}' from the pickle (only numpy arrays, "
                "scipy sparse matrices and chumpy arrays are allowed in a model file)"
            )
        import importlib

        return getattr(importlib.import_module(_numpy_module(target)), name)


def restricted_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` and replace chumpy stand-ins by arrays."""
    path = Path(path)
    if not path.is_file():
        raise HeadgenError(f"file not found: {path}")
    data = path.read_bytes()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), str(path)).load()
        return _plain(obj, str(path))
    except HeadgenError:
        raise
    except RecursionError as exc:  # nesting no model file has (it would also overflow the stand-in pass)
        raise HeadgenError(f"{path}: not a model pickle (its objects are nested too deeply)") from exc
    except Exception as exc:  # truncated or not a pickle at all
        raise HeadgenError(f"{path}: not a readable model pickle ({type(exc).__name__}: {exc})") from exc


def _plain(obj: Any, where: str) -> Any:
    if isinstance(obj, ChumpyStandIn):
        return obj.to_array(where)
    if isinstance(obj, dict):
        return {(k.decode() if isinstance(k, bytes) else k): _plain(v, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, where) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, where) for v in obj)
    return obj


def _array(model: dict, key: str, where: str, ndim: int) -> np.ndarray:
    if key not in model:
        raise HeadgenError(f"{where}: '{key}' is missing (keys: {', '.join(sorted(map(str, model)))})")
    value = model[key]
    if hasattr(value, "toarray"):
        value = value.toarray()
    arr = np.asarray(value)
    if arr.ndim != ndim or arr.dtype == object:
        raise HeadgenError(
            f"{where}: '{key}' should be a {ndim}-d array, got shape {arr.shape} ({arr.dtype})"
        )
    return arr


def load_landmark_embedding(path: str | Path, num_faces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces [L], barycentric [L,3], MediaPipe ids [L]) from a FLAME MediaPipe embedding ``.npz``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadgenError(f"landmark embedding not found: {path}")
    keys = ("lmk_face_idx", "lmk_b_coords", "landmark_indices")
    try:
        z = np.load(path, allow_pickle=False)
        missing = [k for k in keys if k not in z.files]
        if missing:
            raise HeadgenError(
                f"{path}: missing array '{missing[0]}'; a MediaPipe embedding has {', '.join(keys)}"
            )
        faces = np.asarray(z["lmk_face_idx"], dtype=np.int64).reshape(-1)
        bary = np.asarray(z["lmk_b_coords"], dtype=np.float64).reshape(-1, 3)
        ids = np.asarray(z["landmark_indices"], dtype=np.int64).reshape(-1)
    except (ValueError, OSError) as exc:
        raise HeadgenError(f"{path}: not a readable .npz landmark embedding ({exc})") from exc
    if not (len(faces) == len(bary) == len(ids)):
        raise HeadgenError(f"{path}: lmk_face_idx, lmk_b_coords and landmark_indices have different lengths")
    if len(faces) and (faces.min() < 0 or faces.max() >= num_faces):
        raise HeadgenError(f"{path}: lmk_face_idx refers to faces outside the model ({num_faces} faces)")
    return faces, bary, ids


def load_flame(path: str | Path, landmark_embedding: str | Path | None = None, shape_components: int = 300,
               num_identity: int | None = None, num_expression: int | None = None,
               uv_template: str | Path | None = None, masks: str | Path | None = None,
               normalize: bool = True) -> HeadModel:
    """Load a FLAME ``generic_model.pkl`` (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadgenError(
            f"FLAME model not found: {path}; download generic_model.pkl from https://flame.is.tue.mpg.de "
            "(registration required) and set head.path"
        )
    model = restricted_load(path)
    where = str(path)
    if not isinstance(model, dict):
        raise HeadgenError(f"{where}: expected a dict of arrays, got {type(model).__name__}")
    v = _array(model, "v_template", where, 2).astype(np.float64)
    f = _array(model, "f", where, 2).astype(np.int64)
    dirs = _array(model, "shapedirs", where, 3).astype(np.float64)
    if v.shape[1] != 3 or f.shape[1] != 3 or dirs.shape[:2] != v.shape:
        raise HeadgenError(
            f"{where}: inconsistent shapes v_template {v.shape}, f {f.shape}, shapedirs {dirs.shape}"
        )
    if f.min() < 0 or f.max() >= len(v):
        raise HeadgenError(f"{where}: 'f' refers to vertices outside v_template")
    total = dirs.shape[2]
    n_shape = min(shape_components, total)
    identity = np.moveaxis(dirs[:, :, :n_shape], 2, 0)
    expressions = np.moveaxis(dirs[:, :, n_shape:], 2, 0)
    if num_identity is not None:
        if not 0 <= num_identity <= len(identity):
            raise HeadgenError(f"num_identity={num_identity}: {where} has {len(identity)} shape components")
        identity = identity[:num_identity]
    if num_expression is not None:
        if not 0 <= num_expression <= len(expressions):
            raise HeadgenError(
                f"num_expression={num_expression}: {where} has {len(expressions)} expression components"
            )
        expressions = expressions[:num_expression]

    if landmark_embedding is not None:
        lm_faces, lm_bary, lm_ids = load_landmark_embedding(landmark_embedding, len(f))
    else:
        lm_faces, lm_bary, lm_ids = np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0, np.int64)

    uvs = uv_faces = None
    if uv_template is not None:
        from headgen.heads.ict import read_obj, triangulate

        obj = read_obj(Path(uv_template).expanduser())
        tf, tuv, _ = triangulate(obj)
        if tuv is None or tf.shape != f.shape or not np.array_equal(tf, f):
            raise HeadgenError(
                f"{uv_template}: its faces do not match the model's 'f' (need the FLAME head template)"
            )
        uvs, uv_faces = obj.uvs, tuv

    regions: dict[str, np.ndarray] = {}
    if masks is not None:
        raw = restricted_load(Path(masks).expanduser())
        if not isinstance(raw, dict):
            raise HeadgenError(f"{masks}: expected a dict of vertex index arrays")
        for name, idx in raw.items():
            m = np.zeros(len(v), dtype=bool)
            m[np.asarray(idx, dtype=np.int64)] = True
            regions[str(name)] = m

    head = HeadModel(
        name="flame",
        v_template=v,
        faces=f,
        identity_basis=identity,
        expression_basis=expressions,
        expression_names=[f"flame_exp_{i:03d}" for i in range(len(expressions))],
        landmark_faces=lm_faces,
        landmark_bary=lm_bary,
        landmark_ids=lm_ids,
        uvs=uvs,
        uv_faces=uv_faces,
        regions=regions,
        scale=float(np.ptp(v[:, 1])),
        units="m",
        meta={"source": str(path)},
    )
    if 152 in set(lm_ids.tolist()):
        head.scale = float(v[:, 1].max() - head.landmark(152)[1])
    if normalize:
        if 152 not in set(lm_ids.tolist()):
            raise HeadgenError(
                "FLAME normalize needs the chin (MediaPipe landmark 152) from a landmark embedding; "
                "set head.landmark_embedding or head.normalize: false"
            )
        head = head.normalized()
    return head


@register("head", "flame")
class FlameHead(LazyHead):
    """FLAME head model from your own generic_model.pkl (chumpy not needed)."""

    @dataclass
    class Config:
        path: str
        """FLAME generic_model.pkl (not redistributable: download it from the FLAME website)."""
        landmark_embedding: str | None = None
        """MediaPipe landmark embedding .npz (lmk_face_idx, lmk_b_coords, landmark_indices)."""
        shape_components: int = 300
        """How many shapedirs components are identity modes (the rest are expressions)."""
        num_identity: int | None = None
        """Keep only the first N identity modes (None: all)."""
        num_expression: int | None = None
        """Keep only the first N expression components (None: all)."""
        uv_template: str | None = None
        """OBJ with the FLAME topology and UVs (e.g. head_template.obj); None: no UVs."""
        masks: str | None = None
        """FLAME_masks.pkl (region name -> vertex indices); None: no regions."""
        normalize: bool = True
        """Scale and centre to the built-in head's frame (needs landmark 152); false keeps metres."""

    def build(self) -> HeadModel:
        c = self.cfg
        return load_flame(c.path, c.landmark_embedding, c.shape_components, c.num_identity,
                          c.num_expression, c.uv_template, c.masks, c.normalize)
