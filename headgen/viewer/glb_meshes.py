"""A run's head.glb, taken apart for the viewer: one small GLB per mesh whose vertex positions can
be rewritten in place.

viser draws GLBs with three.js but has no API for morph-target weights, so an expression slider
must re-send geometry. Two things keep that cheap:

* each mesh of head.glb (skin, eyeballs, teeth, hair, ...) becomes its own GLB, without its morph
  targets, and only the meshes a change moves are re-sent (a blink moves the skin and the lashes,
  not the hair);
* each of those GLBs is encoded once (textures included, as the exporter wrote them); an update
  copies the bytes and overwrites the POSITION buffer with ``base + sum_k w_k delta_k``. The
  accessor bounds are widened once to cover any weights in [0, 1], so the JSON chunk never
  changes size.

Normals stay the rest pose's, as in three.js and Blender for a glTF without NORMAL morph targets
(the exporter's default), so the viewer shows what those programs show.
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headgen.errors import HeadgenError

_COMPONENTS = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_TEXTURE_SLOTS = (("pbrMetallicRoughness", "baseColorTexture"), ("pbrMetallicRoughness", "metallicRoughnessTexture"),
                  (None, "normalTexture"), (None, "occlusionTexture"), (None, "emissiveTexture"))


@dataclass
class ViewMesh:
    """One mesh of head.glb: its own GLB (``template``) and what moves it."""

    name: str
    template: bytes
    position_offset: int
    """Byte offset of the POSITION data inside ``template``."""
    base: np.ndarray
    """[V,3] rest positions (float32)."""
    deltas: np.ndarray | None
    """[K,V,3] morph-target position deltas, in ``target_names`` order (None: no targets)."""
    target_names: list[str] = field(default_factory=list)

    def glb(self, weights: np.ndarray | None = None) -> bytes:
        """The mesh's GLB with positions ``base + sum_k weights[k] * deltas[k]``."""
        if weights is None or self.deltas is None or not np.any(weights):
            return self.template
        pos = self.base + np.einsum("k,kvc->vc", weights.astype(np.float32), self.deltas)
        data = bytearray(self.template)
        data[self.position_offset:self.position_offset + pos.nbytes] = pos.astype(np.float32).tobytes()
        return bytes(data)

    def moved_by(self, changed: np.ndarray) -> bool:
        """Whether a change of the weights at the indices ``changed`` moves this mesh."""
        return self.deltas is not None and bool(np.any(self._moving[changed]))

    def __post_init__(self) -> None:
        self._moving = (np.zeros(0, bool) if self.deltas is None
                        else np.abs(self.deltas).reshape(len(self.deltas), -1).max(1) > 0)


@dataclass
class GlbClip:
    """The GLB's first animation: morph weights over time (and the root's rotation, if any)."""

    name: str
    times: np.ndarray
    """[T] seconds."""
    weights: np.ndarray
    """[T,K] in the morph targets' order."""
    rotation: np.ndarray | None = None
    """[T,4] xyzw quaternions of the root node (glTF order), or None."""

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Weights (and rotation) at ``t`` seconds, linear between keys, held at the ends."""
        i = int(np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 2))
        t0, t1 = self.times[i], self.times[i + 1]
        a = float(np.clip((t - t0) / max(t1 - t0, 1e-9), 0.0, 1.0))
        w = (1 - a) * self.weights[i] + a * self.weights[i + 1]
        if self.rotation is None:
            return w, None
        q = (1 - a) * self.rotation[i] + a * self.rotation[i + 1]  # nlerp: keys are close together
        return w, q / np.linalg.norm(q)


@dataclass
class GlbHead:
    meshes: list[ViewMesh]
    target_names: list[str]
    clip: GlbClip | None


def _accessor(doc: Any, blob: bytes, index: int) -> np.ndarray:
    acc = doc.accessors[index]
    if acc.sparse is not None or acc.bufferView is None:
        raise HeadgenError(f"head.glb: accessor {index} is sparse or has no data; the viewer reads plain "
                           "accessors only")
    view = doc.bufferViews[acc.bufferView]
    width = _WIDTH[acc.type]
    dtype = np.dtype(_COMPONENTS[acc.componentType])
    if view.byteStride not in (None, 0, width * dtype.itemsize):
        raise HeadgenError(f"head.glb: accessor {index} is interleaved (byteStride {view.byteStride}); "
                           "the viewer reads tightly packed buffers, as headgen's exporter writes them")
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    data = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start)
    return data.reshape(acc.count, width) if width > 1 else data


MAX_TEXTURE = 1024
"""Textures above this size are reduced for the viewer (the files keep theirs): an expression change
re-sends a mesh with its textures, and DreamFace's 2048 px maps would make that 4x larger than
a browser window can show."""


def read_glb(path: str | Path, max_texture: int = MAX_TEXTURE) -> GlbHead:
    """Split a GLB (as :class:`headgen.export.gltf.GlbExporter` writes it) into :class:`ViewMesh` es."""
    import pygltflib

    path = Path(path)
    try:
        doc = pygltflib.GLTF2().load_binary(str(path))
    except Exception as exc:  # pygltflib raises bare errors on a damaged file
        raise HeadgenError(f"{path}: not a readable GLB ({type(exc).__name__}: {exc}); export it again with "
                           "python launch.py --export RUN_DIR") from exc
    blob = doc.binary_blob() or b""
    meshes, names = [], []
    for node in doc.nodes:
        if node.mesh is None:
            continue
        gmesh = doc.meshes[node.mesh]
        targets = list((gmesh.extras or {}).get("targetNames", []))
        if targets and not names:
            names = targets
        if targets and targets != names:
            raise HeadgenError(f"{path}: mesh {gmesh.name} has other morph targets than the first mesh; "
                               "the viewer drives every mesh with one set of sliders")
        for p, prim in enumerate(gmesh.primitives):
            label = gmesh.name if len(gmesh.primitives) == 1 else f"{gmesh.name}_{p}"
            meshes.append(_split_primitive(doc, blob, prim, label or f"mesh{len(meshes)}", names if targets else [],
                                           max_texture))
    if not meshes:
        raise HeadgenError(f"{path}: the GLB has no meshes")
    return GlbHead(meshes, names, _read_clip(doc, blob, len(names)))


def _split_primitive(doc: Any, blob: bytes, prim: Any, name: str, targets: list[str], max_texture: int) -> ViewMesh:
    import pygltflib as g

    from headgen.export.gltf import GlbBuilder

    base = np.array(_accessor(doc, blob, prim.attributes.POSITION), dtype=np.float32)
    deltas = None
    if prim.targets:
        # pygltflib reads morph targets back as plain dicts
        deltas = np.stack([np.asarray(_accessor(doc, blob, t["POSITION"] if isinstance(t, dict) else t.POSITION),
                                      np.float32) for t in prim.targets])
    b = GlbBuilder()
    attrs = g.Attributes(POSITION=b.accessor(base, bounds=True))
    pos_accessor = b.doc.accessors[attrs.POSITION]
    if deltas is not None:  # bounds that hold for any weights in [0, 1]
        lo = base + np.minimum(deltas, 0).sum(0)
        hi = base + np.maximum(deltas, 0).sum(0)
        pos_accessor.min = lo.min(0).astype(np.float64).tolist()
        pos_accessor.max = hi.max(0).astype(np.float64).tolist()
    for key in ("NORMAL", "TANGENT", "TEXCOORD_0", "COLOR_0"):
        index = getattr(prim.attributes, key)
        if index is not None:
            setattr(attrs, key, b.accessor(np.asarray(_accessor(doc, blob, index), np.float32)))
    indices = b.accessor(np.asarray(_accessor(doc, blob, prim.indices), np.uint32).reshape(-1), target=34963)
    primitive = g.Primitive(attributes=attrs, indices=indices, mode=prim.mode if prim.mode is not None else 4)
    if prim.material is not None:
        primitive.material = _copy_material(doc, blob, b, prim.material, max_texture)
    b.doc.meshes.append(g.Mesh(name=name, primitives=[primitive]))
    b.doc.nodes.append(g.Node(name=name, mesh=0))
    b.doc.scenes.append(g.Scene(nodes=[0]))
    b.doc.scene = 0
    out = b.finish()
    data = b"".join(out.save_to_bytes())
    json_len = struct.unpack_from("<I", data, 12)[0]
    bin_start = 12 + 8 + json_len + 8
    offset = bin_start + (out.bufferViews[pos_accessor.bufferView].byteOffset or 0)
    if not np.array_equal(np.frombuffer(data, np.float32, base.size, offset).reshape(base.shape), base):
        raise HeadgenError(f"viewer: the POSITION data of {name} is not where expected in its GLB")  # a bug
    return ViewMesh(name, data, offset, base, deltas, targets if deltas is not None else [])


def _fit_image(data: bytes, mime: str, max_texture: int) -> tuple[bytes, str]:
    """The image as stored, or, when larger than ``max_texture``, Lanczos-reduced and PNG-encoded."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if max(img.size) <= max_texture:
            return data, mime
        small = img.resize((max_texture, max_texture * img.size[1] // img.size[0]), Image.LANCZOS)
        out = io.BytesIO()
        small.save(out, format="PNG")
    return out.getvalue(), "image/png"


def _copy_material(doc: Any, blob: bytes, b: Any, index: int, max_texture: int) -> int:
    """The source material in ``b``'s document, its textures copied along (at most ``max_texture``
    pixels on a side)."""
    import pygltflib as g

    material = copy.deepcopy(doc.materials[index])
    for owner, slot in _TEXTURE_SLOTS:
        holder = getattr(material, owner) if owner else material
        info = getattr(holder, slot, None) if holder is not None else None
        if info is None:
            continue
        src = doc.textures[info.index]
        image = doc.images[src.source]
        view = doc.bufferViews[image.bufferView]
        start = view.byteOffset or 0
        data, mime = _fit_image(blob[start:start + view.byteLength], image.mimeType, max_texture)
        b.doc.images.append(g.Image(bufferView=b.view(data), mimeType=mime, name=image.name))
        sampler = None
        if src.sampler is not None:
            b.doc.samplers.append(copy.deepcopy(doc.samplers[src.sampler]))
            sampler = len(b.doc.samplers) - 1
        b.doc.textures.append(g.Texture(sampler=sampler, source=len(b.doc.images) - 1, name=src.name))
        info.index = len(b.doc.textures) - 1
    b.doc.materials.append(material)
    return len(b.doc.materials) - 1


def _read_clip(doc: Any, blob: bytes, n_targets: int) -> GlbClip | None:
    if not doc.animations or not n_targets:
        return None
    anim = doc.animations[0]
    weights = rotation = times = None
    for ch in anim.channels:
        sampler = anim.samplers[ch.sampler]
        t = np.asarray(_accessor(doc, blob, sampler.input), np.float64).reshape(-1)
        out = np.asarray(_accessor(doc, blob, sampler.output), np.float64)
        if ch.target.path == "weights" and weights is None:
            times, weights = t, out.reshape(len(t), n_targets)
        elif ch.target.path == "rotation" and rotation is None:
            rotation = out.reshape(len(t), 4)
    if weights is None or times is None or len(times) < 2:
        return None
    return GlbClip(anim.name or "clip", times, weights, rotation)
