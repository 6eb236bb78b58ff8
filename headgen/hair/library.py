"""Hair libraries: a folder of hairstyle meshes, and fitting them to a deformed head.

A library folder holds one hairstyle per mesh file (``.obj``, ``.ply``, ``.glb``, ``.gltf``,
``.stl``, ``.off``; read with trimesh), named by the file's stem. Vertices are in the head model's
frame, in head heights (the built-in head's unit: chin to crown = 1); they are multiplied by the
head's ``scale`` on loading, so one library serves a head in centimetres (ICT-FaceKit) or metres
(FLAME) made in the same frame. An optional ``library.json`` gives display names and texts:

.. code-block:: json

    {"unit": "head-height", "styles": {"long": {"name": "long hair", "text": "long hair to the shoulders"}}}

(``unit: model`` takes the coordinates as they are). ``none`` is reserved for "no hair".

Hairstyles are made for the head model's template (mean) head. :class:`HairFit` carries them to
a head of another identity (or carved): each hair vertex follows the inverse-distance-weighted
displacement of its nearest template vertices.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from headgen.errors import HeadgenError, did_you_mean

NONE = "none"
"""The style name meaning no hair (bald); never a file."""
MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
INDEX_FILE = "library.json"


@dataclass
class HairStyle:
    """One hairstyle: a triangle mesh in the head model's frame and units."""

    name: str
    vertices: Tensor
    """[V,3] float32, model units."""
    faces: Tensor
    """[F,3] int64."""
    display: str = ""
    text: str = ""
    path: Path | None = None


@dataclass
class HairLibrary:
    """The hairstyles of one folder, in name order."""

    styles: list[HairStyle]
    root: Path
    key: str
    """A hash of the files' contents and the scale they were loaded at (for caches)."""
    _by_name: dict[str, HairStyle] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {s.name: s for s in self.styles}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.styles]

    def __len__(self) -> int:
        return len(self.styles)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> HairStyle:
        if name not in self._by_name:
            raise HeadgenError(
                f"hair library {self.root}: no hairstyle '{name}'{did_you_mean(name, self._by_name)}; "
                f"it has: {', '.join(self.names)} (and '{NONE}' for no hair)"
            )
        return self._by_name[name]


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HeadgenError(f"hair library {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("styles", {}), dict):
        raise HeadgenError(f"hair library {path}: expected {{\"styles\": {{name: {{name, text}}}}}}")
    if meta.get("unit", "head-height") not in ("head-height", "model"):
        raise HeadgenError(f"hair library {path}: unit must be 'head-height' or 'model', got {meta.get('unit')!r}")
    return meta


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V,3] float64, faces [F,3] int64) of a mesh file; a HeadgenError naming the file
    when trimesh cannot read it or it holds no triangles."""
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001  (trimesh raises many types for broken files)
        raise HeadgenError(f"hair library: cannot read hairstyle mesh {path} ({type(exc).__name__}: {exc})") from exc
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if faces.ndim != 2 or len(faces) == 0 or faces.shape[1] != 3:
        raise HeadgenError(f"hair library: hairstyle mesh {path} has no triangles")
    if not np.isfinite(verts).all():
        raise HeadgenError(f"hair library: hairstyle mesh {path} has non-finite vertex positions")
    return verts, faces


def load_library(folder: str | Path, scale: float = 1.0) -> HairLibrary:
    """The hairstyles in ``folder`` (see the module docstring), multiplied by ``scale`` (the head's
    height in model units) unless library.json says ``unit: model``."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise HeadgenError(
            f"hair library folder {root} does not exist; give library: builtin or a folder of hairstyle "
            f"meshes ({', '.join(MESH_SUFFIXES)})"
        )
    meta = _read_index(root)
    info = meta.get("styles", {})
    unit_scale = 1.0 if meta.get("unit") == "model" else float(scale)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise HeadgenError(
            f"hair library folder {root} holds no hairstyle meshes ({', '.join(MESH_SUFFIXES)}); "
            "add one file per hairstyle or use library: builtin"
        )
    stems = [p.stem for p in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise HeadgenError(f"hair library {root}: several files for hairstyle(s) {', '.join(dupes)}; keep one each")
    if NONE in stems:
        raise HeadgenError(f"hair library {root}: '{NONE}' is reserved for no hair; rename {NONE} mesh file")
    unknown = sorted(set(info) - set(stems))
    if unknown:
        raise HeadgenError(f"hair library {root}/{INDEX_FILE} describes {', '.join(unknown)}, which have no mesh file")
    digest = hashlib.sha256(f"scale={unit_scale!r}".encode())
    styles = []
    for path in files:
        verts, faces = read_mesh(path)
        if faces.max() >= len(verts) or faces.min() < 0:
            raise HeadgenError(f"hair library: hairstyle mesh {path} has face indices outside its vertices")
        entry = info.get(path.stem, {})
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
        styles.append(HairStyle(
            name=path.stem,
            vertices=torch.from_numpy(verts * unit_scale).float(),
            faces=torch.from_numpy(faces).long(),
            display=str(entry.get("name", path.stem)),
            text=str(entry.get("text", "")),
            path=path,
        ))
    return HairLibrary(styles, root, digest.hexdigest()[:16])


def builtin_library(head: Any, cache_root: str | Path | None = None) -> HairLibrary:
    """The built-in procedural hairstyles of ``head`` (generated into the cache on first use)."""
    from headgen.hair.procedural import write_builtin_library

    root = Path(cache_root).expanduser() if cache_root else None
    return load_library(write_builtin_library(head, root), scale=float(head.scale))


def resolve_library(spec: str, head: Any, cache_root: str | Path | None = None) -> HairLibrary:
    """``builtin`` or a folder path."""
    if spec == "builtin":
        return builtin_library(head, cache_root)
    return load_library(spec, scale=float(head.scale))


# ---------------------------------------------------------------------------------------- fitting
class HairFit:
    """Carries hairstyles made for the template head to a deformed head (same topology).

    Each hair vertex is bound once to its ``k`` nearest template vertices with weights
    proportional to 1 / distance^2; on a head ``v`` it moves by the weighted displacement
    ``v - template`` of those vertices.
    """

    def __init__(self, template: Tensor, k: int = 4):
        self.template = template.detach().float().cpu()
        self.k = k
        self._bindings: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def binding(self, vertices: Tensor) -> tuple[Tensor, Tensor]:
        """(indices [V,k], weights [V,k]) of hair vertices [V,3] (cached per tensor)."""
        key = id(vertices)
        if key not in self._bindings or self._bindings[key][0] is not vertices:
            from scipy.spatial import cKDTree

            # A k-d tree over the template: 10x faster than a chunked torch.cdist + topk, same neighbours.
            dist, i = cKDTree(self.template.double().numpy()).query(vertices.detach().cpu().double().numpy(), k=self.k)
            w = 1.0 / torch.from_numpy(dist).float().clamp_min(1e-6).pow(2)
            self._bindings[key] = (vertices, torch.from_numpy(i).long(), w / w.sum(1, keepdim=True))
        return self._bindings[key][1:]

    def fit(self, style: HairStyle, head_vertices: Tensor) -> Tensor:
        """[V,3] the style's vertices on a head whose vertices are ``head_vertices`` [N,3]."""
        if head_vertices.shape != self.template.shape:
            raise HeadgenError(
                f"hair fit: the head's vertices are {tuple(head_vertices.shape)}, the template's "
                f"{tuple(self.template.shape)}: the head is not the hair library's head model"
            )
        idx, w = self.binding(style.vertices)
        dev = head_vertices.device
        disp = head_vertices.detach().float() - self.template.to(dev)
        return style.vertices.to(dev) + (disp[idx.to(dev)] * w.to(dev)[..., None]).sum(1)


__all__ = ["INDEX_FILE", "MESH_SUFFIXES", "NONE", "HairFit", "HairLibrary", "HairStyle", "builtin_library",
           "load_library", "read_mesh", "resolve_library"]
