"""Binary glTF 2.0 (``head.glb``): PBR material, textures and expression morph targets.

Layout of the file: one scene; node/mesh 0 is the head (one triangle primitive, material 0, the
morph targets). Each part of the surface (DreamFace's hair, ICT-FaceKit's eyeballs, teeth, ...)
follows as a node + mesh + material of its own, named after the part; a constant-colour part's
material is its ``baseColorFactor`` (per-vertex colours: ``COLOR_0``), double-sided, its own
roughness when it has one, ``alphaMode: BLEND`` with the part's alpha for overlays. A part with
``morph_deltas`` carries the head's morph targets (same names, same order: one weight moves the
head and its eyes and teeth together); other parts (the hair) follow none.

* Vertices. glTF has a single index buffer, so every distinct (position index, UV index) pair
  of the face corners becomes one output vertex (:func:`split_uv_seams`); ``pos_index`` maps each
  output vertex back to its source position vertex. Normals are the source mesh's smooth vertex
  normals (so seams do not show), UVs are flipped to glTF's top-left origin (``v_gltf = 1 - v``).
* Material: ``pbrMetallicRoughness`` with the albedo map as ``baseColorTexture``, metallic 0
  (skin), and either a constant ``roughnessFactor`` or, when the surface has a ``specular_map``,
  a ``metallicRoughnessTexture`` with roughness = 1 - specular in G, metallic 0 in B (R is 1, the
  "no occlusion" value, so the texture also reads correctly as a packed ORM map). That inversion
  is a heuristic: a specular intensity map has no exact metallic-roughness equivalent.
* The tangent-space normal map is the ``normalTexture``. glTF reads normal maps green-up with the
  bitangent ``cross(N, T.xyz) * T.w`` pointing to the top of the image, which is headgen's
  convention (see :mod:`headgen.geometry.mesh`), so the map is written as is and ``TANGENT`` is
  the renderer's own per-UV-vertex tangent frame (:meth:`Mesh.vertex_tangents`), made orthogonal
  to the exported normal.
* Morph targets: one per expression blendshape, ``POSITION`` deltas (and ``NORMAL`` deltas with
  ``morph_normals``), named in ``mesh.extras.targetNames`` (read by Blender and three.js), default
  weights 0. The base mesh is the representation's exported surface, so target weights add to
  any static expression the representation already carries.
* Animation (``animation: default`` or a Live Link Face CSV; :mod:`headgen.animation`): one clip,
  LINEAR samplers, a ``weights`` channel on every node whose mesh has the morph targets and, for a
  performance with head rotation, a ``rotation`` channel on a ``root`` node that then parents all
  meshes. The default clip plays the expression sequence of animation.mp4, so opening the file in
  three.js or Blender shows the head move.
* Images are embedded in the binary chunk (``bufferView`` + ``mimeType``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.export.images import to_uint8
from headgen.export.obj import export_surface, part_name
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.registry import register
from headgen.rundir import atomic_write, check_inside

if TYPE_CHECKING:
    from headgen.animation.clip import Clip
    from headgen.context import RunContext

log = logging.getLogger(__name__)

# glTF enums
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
_MIME = {"png": "image/png", "jpeg": "image/jpeg"}


# ---------------------------------------------------------------------- expressions
def expression_blendshapes(representation: Any) -> tuple[list[str], Tensor] | None:
    """The representation's expression blendshapes as ``(names, deltas [E,V,3])``, or None.

    Duck-typed: ``representation.expression_deltas()`` if it exists, else the blendshapes of the
    head model it is built on (``representation.head.expression_basis`` / ``expression_names``,
    which is what the parametric mesh adds linearly to its vertices). None when there are none.
    """
    fn = getattr(representation, "expression_deltas", None)
    if callable(fn):
        names, deltas = fn()
    else:
        head = getattr(representation, "head", None)
        if head is None or getattr(head, "expression_basis", None) is None:
            return None
        names, deltas = head.expression_names, head.expression_basis
    names = [str(n) for n in names]
    deltas = torch.as_tensor(deltas).detach().float().cpu()
    if deltas.dim() != 3 or deltas.shape[-1] != 3 or deltas.shape[0] != len(names):
        raise HeadgenError(
            f"expression blendshapes must be [E,V,3] with E names, got {tuple(deltas.shape)} and {len(names)} names"
        )
    if not names:
        return None
    return names, deltas


def _check_blendshapes(shapes: tuple[list[str], Tensor], mesh: Mesh) -> None:
    if shapes[1].shape[1] != mesh.num_vertices:
        raise HeadgenError(
            f"the expression blendshapes have {shapes[1].shape[1]} vertices but the exported mesh has "
            f"{mesh.num_vertices}: the representation's surface is not the head model's topology"
        )


# ---------------------------------------------------------------------- vertices
@dataclass
class SeamSplit:
    """Output vertices of a mesh whose UV seams are split (one index buffer for all attributes)."""

    pos_index: np.ndarray
    """[N] source position vertex of each output vertex."""
    uv_index: np.ndarray | None
    """[N] source UV of each output vertex (None when the mesh has no UVs)."""
    faces: np.ndarray
    """[F,3] uint32 output-vertex indices, same face order and winding as the source."""


def split_uv_seams(mesh: Mesh) -> SeamSplit:
    """One output vertex per distinct (position index, UV index) pair used by a face corner.

    Output vertices are sorted by source position index, then UV index; vertices no face uses
    are dropped.
    """
    pos = mesh.t_pos_idx.detach().cpu().numpy().astype(np.int64).reshape(-1)
    if mesh.v_tex is None:
        uv = np.zeros_like(pos)
        n_uv = 1
    else:
        uv = mesh.uv_idx.detach().cpu().numpy().astype(np.int64).reshape(-1)
        n_uv = int(mesh.v_tex.shape[0])
    keys, inverse = np.unique(pos * n_uv + uv, return_inverse=True)
    faces = inverse.reshape(-1, 3).astype(np.uint32)
    return SeamSplit(
        pos_index=keys // n_uv,
        uv_index=None if mesh.v_tex is None else keys % n_uv,
        faces=faces,
    )


def _unit_or(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    # glTF requires unit NORMAL/TANGENT; vertices of degenerate faces only get a valid stand-in.
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(norm > 1e-12, v / np.maximum(norm, 1e-12), fallback).astype(np.float32)


def _tangents(mesh: Mesh, split: SeamSplit, normals: np.ndarray) -> np.ndarray:
    t4 = mesh.vertex_tangents().detach().cpu().double().numpy()[split.uv_index]
    t = t4[:, :3] - (t4[:, :3] * normals).sum(-1, keepdims=True) * normals
    # Any direction orthogonal to the normal keeps the frame valid where UVs are degenerate.
    alt = np.cross(normals, np.where(np.abs(normals[:, 1:2]) < 0.9, [[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]))
    t = _unit_or(t, _unit_or(alt, np.array([1.0, 0.0, 0.0])))
    w = np.where(t4[:, 3:4] < 0, -1.0, 1.0).astype(np.float32)
    return np.concatenate([t, w], axis=-1)


def _normal_deltas(mesh: Mesh, deltas: Tensor) -> np.ndarray:
    """[E,V,3] change of the unit vertex normals under each blendshape at weight 1."""
    tri = mesh.t_pos_idx.long()
    pos = mesh.v_pos.detach().double()[None] + deltas.double()  # all targets at once
    p = pos[:, tri]  # [E,F,3,3]
    cross = torch.cross(p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0], dim=-1)
    acc = torch.zeros_like(pos).index_add(1, tri.reshape(-1), cross.repeat_interleave(3, dim=1))
    moved = F.normalize(acc, dim=-1, eps=1e-20)
    return (moved - mesh.vertex_normals().detach().double()[None]).numpy()


# ---------------------------------------------------------------------- document
class GlbBuilder:
    """Collects buffer views and accessors in one binary blob."""

    def __init__(self) -> None:
        import pygltflib

        self.g = pygltflib
        self.doc = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0", generator="headgen"))
        self.blob = bytearray()

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))  # accessors need 4-byte alignment
        self.doc.bufferViews.append(
            self.g.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data), target=target)
        )
        self.blob.extend(data)
        return len(self.doc.bufferViews) - 1

    def accessor(self, array: np.ndarray, target: int | None = _ARRAY_BUFFER, bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        comps = 1 if array.ndim == 1 else array.shape[1]
        if array.dtype == np.uint32:
            ctype = _UINT32
        else:
            array = array.astype(np.float32)
            ctype = _FLOAT
        acc = self.g.Accessor(
            bufferView=self.view(array.tobytes(), target), componentType=ctype, count=int(array.shape[0]),
            type=_TYPES[comps],
        )
        if bounds:
            # float32 -> Python float is exact, so the bounds match the stored values bit for bit.
            acc.min = array.reshape(len(array), comps).min(0).astype(np.float64).tolist()
            acc.max = array.reshape(len(array), comps).max(0).astype(np.float64).tolist()
        self.doc.accessors.append(acc)
        return len(self.doc.accessors) - 1

    def texture(self, image: Tensor | np.ndarray, name: str, fmt: str) -> int:
        import imageio.v3 as iio

        data = to_uint8(image)
        encoded = iio.imwrite("<bytes>", data, extension=".png" if fmt == "png" else ".jpg")
        self.doc.images.append(self.g.Image(bufferView=self.view(encoded), mimeType=_MIME[fmt], name=name))
        if not self.doc.samplers:
            self.doc.samplers.append(
                self.g.Sampler(magFilter=_LINEAR, minFilter=_LINEAR_MIPMAP_LINEAR, wrapS=_CLAMP_TO_EDGE,
                               wrapT=_CLAMP_TO_EDGE)
            )
        self.doc.textures.append(self.g.Texture(sampler=0, source=len(self.doc.images) - 1, name=name))
        return len(self.doc.textures) - 1

    def finish(self) -> Any:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        self.doc.buffers.append(self.g.Buffer(byteLength=len(self.blob)))
        self.doc.set_binary_blob(bytes(self.blob))
        return self.doc


def roughness_image(specular: Tensor | np.ndarray) -> np.ndarray:
    """A glTF metallicRoughness texture from a specular map in [0,1] ([h,w], [h,w,1] or [h,w,3]).

    G = roughness = 1 - specular (mean over channels), B = metallic = 0, R = 1.
    """
    spec = specular.detach().float().cpu().numpy() if isinstance(specular, Tensor) else np.asarray(specular, float)
    if spec.ndim == 3:
        spec = spec.mean(-1)
    if spec.ndim != 2:
        raise HeadgenError(f"specular_map must be [h,w] or [h,w,C], got shape {spec.shape}")
    rough = 1.0 - np.clip(spec, 0.0, 1.0)
    return np.stack([np.ones_like(rough), rough, np.zeros_like(rough)], -1)


def glb_document(
    surface: SurfaceGeometry,
    blendshapes: tuple[list[str], Tensor] | None = None,
    *,
    morph_normals: bool = False,
    texture_format: str = "png",
    roughness: float = 0.6,
    clip: Clip | None = None,
) -> tuple[Any, SeamSplit]:
    """The ``pygltflib.GLTF2`` document (binary blob attached) and the vertex split it used; with
    ``clip``, one animation driving the morph weights of every mesh that has targets (and, when the
    clip has a rotation, a ``root`` node above all meshes)."""
    import pygltflib as g

    mesh = surface.mesh.to("cpu")
    if blendshapes is not None:
        _check_blendshapes(blendshapes, mesh)

    b = GlbBuilder()
    split = _add_mesh(b, surface, mesh, "head", blendshapes, morph_normals, texture_format, roughness)
    for i, part in enumerate(surface.parts):
        shapes = None
        if blendshapes is not None and part.morph_deltas is not None:
            shapes = (blendshapes[0], part.morph_deltas.detach().float().cpu())
            _check_blendshapes(shapes, part.mesh)
        _add_mesh(b, part, part.mesh.to("cpu"), part_name(part, i), shapes, morph_normals, texture_format,
                  roughness if part.roughness is None else part.roughness, is_part=True)
    for i, gmesh in enumerate(b.doc.meshes):
        b.doc.nodes.append(g.Node(name=gmesh.name, mesh=i))
    roots = list(range(len(b.doc.nodes)))
    if clip is not None and clip.rotation is not None:
        b.doc.nodes.append(g.Node(name="root", children=roots))
        roots = [len(b.doc.nodes) - 1]
    b.doc.scenes.append(g.Scene(name="headgen", nodes=roots))
    b.doc.scene = 0
    if clip is not None:
        _add_clip(b, clip, blendshapes)
    return b.finish(), split


def _add_clip(b: GlbBuilder, clip: Clip, blendshapes: tuple[list[str], Tensor] | None) -> None:
    """A glTF animation: LINEAR samplers over the clip's times; morph weights on each mesh node with
    targets (all carry the head's targets, same order), the rotation on the root node."""
    g = b.g
    if blendshapes is None or list(clip.names) != list(blendshapes[0]):
        raise HeadgenError(f"animation clip {clip.name}: its weights are over {len(clip.names)} expressions, the "
                           f"morph targets are {0 if blendshapes is None else len(blendshapes[0])} other ones")
    times = np.asarray(clip.times, dtype=np.float32)
    if times.ndim != 1 or len(times) < 2 or times[0] < 0 or not (np.diff(times) > 0).all():
        raise HeadgenError(f"animation clip {clip.name}: times must be >= 0 and strictly increasing")
    inp = b.accessor(times, target=None, bounds=True)
    samplers = [g.AnimationSampler(input=inp, output=b.accessor(clip.weights.astype(np.float32).reshape(-1),
                                                                target=None), interpolation="LINEAR")]
    channels = [g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(node=i, path="weights"))
                for i, node in enumerate(b.doc.nodes) if node.mesh is not None and b.doc.meshes[node.mesh].weights]
    if clip.rotation is not None:
        samplers.append(g.AnimationSampler(input=inp, output=b.accessor(clip.rotation.astype(np.float32), target=None),
                                           interpolation="LINEAR"))
        root = next(i for i, n in enumerate(b.doc.nodes) if n.name == "root")
        channels.append(g.AnimationChannel(sampler=1, target=g.AnimationChannelTarget(node=root, path="rotation")))
    b.doc.animations.append(g.Animation(name=clip.name, samplers=samplers, channels=channels))


def _add_mesh(b: GlbBuilder, surface: SurfaceGeometry, mesh: Mesh, name: str,
              blendshapes: tuple[list[str], Tensor] | None, morph_normals: bool, texture_format: str,
              roughness: float, is_part: bool = False) -> SeamSplit:
    """Append ``surface`` as one mesh with one primitive and one material named ``name`` (a part's
    material is double-sided, as hair meshes are often open, and its textures carry its name)."""
    g = b.g
    prefix = f"{name}_" if is_part else ""
    specular = getattr(surface, "specular_map", None)
    maps = {"diffuse": surface.albedo_map, "normal": surface.normal_map, "specular": specular}
    for kind, image in maps.items():
        if image is not None and mesh.v_tex is None:
            raise HeadgenError(f"exporter glb: the {kind} map of {name} needs UVs but its mesh has none")
    split = split_uv_seams(mesh)
    with torch.no_grad():
        v_pos = mesh.v_pos.detach().double()
        normals_src = mesh.vertex_normals().detach().double().numpy()
    positions = v_pos.numpy()[split.pos_index].astype(np.float32)
    normals = _unit_or(normals_src[split.pos_index], np.array([0.0, 1.0, 0.0]))

    attrs = g.Attributes(
        POSITION=b.accessor(positions, bounds=True),
        NORMAL=b.accessor(normals),
    )
    if mesh.v_tex is not None:
        uv = mesh.v_tex.detach().cpu().double().numpy()[split.uv_index]
        attrs.TEXCOORD_0 = b.accessor(np.stack([uv[:, 0], 1.0 - uv[:, 1]], -1))
        if surface.normal_map is not None:
            attrs.TANGENT = b.accessor(_tangents(mesh, split, normals.astype(np.float64)))
    if surface.v_color is not None and surface.albedo_map is None:
        attrs.COLOR_0 = b.accessor(surface.v_color.detach().cpu().float().clamp(0, 1).numpy()[split.pos_index])
    indices = b.accessor(split.faces.reshape(-1), target=_ELEMENT_ARRAY_BUFFER)

    base = [1.0, 1.0, 1.0, 1.0]
    if surface.base_color is not None and surface.albedo_map is None and surface.v_color is None:
        base = [float(c) for c in surface.base_color.detach().cpu().float().clamp(0, 1).tolist()] + [1.0]
    if surface.alpha < 1.0:
        base[3] = float(surface.alpha)
    pbr = g.PbrMetallicRoughness(baseColorFactor=base, metallicFactor=0.0, roughnessFactor=float(roughness))
    material = g.Material(name=name, pbrMetallicRoughness=pbr, doubleSided=is_part)
    if surface.alpha < 1.0:
        material.alphaMode = "BLEND"
    if surface.albedo_map is not None:
        pbr.baseColorTexture = g.TextureInfo(index=b.texture(surface.albedo_map, f"{prefix}diffuse", texture_format))
    if specular is not None:
        pbr.roughnessFactor = 1.0  # the texture carries the roughness
        pbr.metallicRoughnessTexture = g.TextureInfo(
            index=b.texture(roughness_image(specular), f"{prefix}metallic_roughness", texture_format)
        )
    if surface.normal_map is not None:
        material.normalTexture = g.NormalMaterialTexture(
            index=b.texture(surface.normal_map, f"{prefix}normal", texture_format), scale=1.0
        )
    b.doc.materials.append(material)

    primitive = g.Primitive(attributes=attrs, indices=indices, material=len(b.doc.materials) - 1, mode=4)
    gmesh = g.Mesh(name=name, primitives=[primitive])
    if blendshapes is not None:
        names, deltas = blendshapes
        normal_deltas = _normal_deltas(mesh, deltas) if morph_normals else None
        for e in range(len(names)):
            target = g.Attributes(POSITION=b.accessor(deltas[e].numpy()[split.pos_index], bounds=True))
            if normal_deltas is not None:
                target.NORMAL = b.accessor(normal_deltas[e][split.pos_index])
            primitive.targets.append(target)
        gmesh.weights = [0.0] * len(names)
        gmesh.extras = {"targetNames": list(names)}
    b.doc.meshes.append(gmesh)
    return split


@register("exporter", "glb")
class GlbExporter:
    """Binary glTF 2.0 (head.glb): PBR material with embedded textures and expression morph targets."""

    @dataclass
    class Config:
        filename: str = "head.glb"
        """Name of the binary glTF file in assets/."""
        morph_targets: bool = True
        """Write the expression blendshapes as named morph targets (when the representation has them)."""
        morph_normals: bool = False
        """Also write per-target NORMAL deltas (better shading in three.js; about doubles the targets' size)."""
        texture_format: Literal["png", "jpeg"] = "png"
        """Encoding of the embedded textures (jpeg is smaller but lossy, which hurts normal maps)."""
        roughness: float = 0.6
        """Constant PBR roughness when the surface has no specular map."""
        animation: str = "default"
        """The animation clip in the file: ``default`` (the expression sequence of animation.mp4 over
        ``clip_seconds``), ``none``, or a Live Link Face CSV (its frames as keyframes, its head
        rotation on a ``root`` node). Needs morph targets."""
        clip_seconds: float = 4.0
        """Length of the default clip."""
        timecode_fps: float | None = None
        """A performance's timecode rate, for takes under a second (longer ones show it)."""

        def __post_init__(self) -> None:  # at validation, before any stage runs
            check_inside(self.filename, "exporter glb: filename")
            if self.animation not in ("default", "none") and not Path(self.animation).is_file():
                raise HeadgenError(f"exporter glb: animation must be default, none or a Live Link Face CSV; "
                                   f"{self.animation}: no such file")
            if self.clip_seconds <= 0:
                raise HeadgenError(f"exporter glb: clip_seconds must be > 0, got {self.clip_seconds}")

    def __init__(self, cfg: Config):
        if not cfg.filename.endswith(".glb"):
            raise HeadgenError(f"exporter glb: filename must end with .glb, got {cfg.filename!r}")
        if not 0.0 <= cfg.roughness <= 1.0:
            raise HeadgenError(f"exporter glb: roughness must be in [0, 1], got {cfg.roughness}")
        self.cfg = cfg

    def export(self, representation: Any, ctx: RunContext, assets: Path) -> dict[str, str]:
        surface = export_surface(representation)
        shapes = expression_blendshapes(representation) if self.cfg.morph_targets else None
        if self.cfg.morph_targets and shapes is None:
            log.info("exporter glb: the representation has no expression blendshapes; writing no morph targets")
        doc, _ = glb_document(
            surface, shapes, morph_normals=self.cfg.morph_normals, texture_format=self.cfg.texture_format,
            roughness=self.cfg.roughness, clip=self._clip(shapes, ctx),
        )
        path = atomic_write(assets / self.cfg.filename, lambda p: _save(doc, p))
        return {"glb": str(path)}


    def _clip(self, shapes: tuple[list[str], Tensor] | None, ctx: Any) -> Clip | None:
        from headgen.animation.clip import DEFAULT_SEQUENCE, keyframe_clip, performance_clip
        from headgen.animation.livelink import read_live_link_csv

        if self.cfg.animation == "none":
            return None
        if shapes is None:
            if self.cfg.animation != "default":
                raise HeadgenError(f"exporter glb: animation {self.cfg.animation} needs morph targets, and the "
                                   "representation has no expression blendshapes (or morph_targets is false)")
            return None
        names = shapes[0]
        report = getattr(ctx, "log_once", None) or getattr(ctx, "log", None) or log.warning
        if self.cfg.animation == "default":
            try:
                return keyframe_clip(DEFAULT_SEQUENCE, names, self.cfg.clip_seconds)
            except HeadgenError as exc:  # a head whose expressions the default sequence does not name
                report(f"exporter glb: no default clip ({exc})")
                return None
        return performance_clip(read_live_link_csv(self.cfg.animation, self.cfg.timecode_fps), names,
                                Path(self.cfg.animation).stem,
                                report=report)


def _save(doc: Any, path: Path) -> None:
    if not doc.save_binary(str(path)):
        raise HeadgenError(f"exporter glb: pygltflib could not write {path}")


__all__ = ["GlbExporter", "SeamSplit", "expression_blendshapes", "glb_document", "roughness_image", "split_uv_seams"]
