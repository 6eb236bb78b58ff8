"""ICT-FaceKit (MIT licence), DreamFace's head model, shipped with headgen.

``head=ict-facekit`` with no path loads the copy inside the package (100 identity modes, 57
expressions, 26,719 vertices; :mod:`.ict_files`); ``head.path`` loads a user's own copy (the
published ``FaceXModel`` folder, or a file made by ``scripts/pack_ict_facekit.py``).

Layouts (``parts``):

* ``attached`` (default): ``faces`` is the skin, i.e. face, head and neck plus the mouth and eye
  sockets (vertices [0, 14062); the sockets share 316 triangles with the face at the lips and lids,
  so they stay in the skin mesh), textured in the skin atlas below. Everything else is a
  :class:`~headgen.heads.base.HeadPart` with a fixed material, one per ICT material: drawn
  (opaque) are the eyeballs (``eyeball_*``, ICT's "iris" meshes: white, iris and pupil as vertex
  colours), the teeth and the gums and tongue; the corneas (ICT's "sclera" shells), eyelashes,
  lacrimal fluid, eye blend and eye occlusion are alpha-blended overlays, exported but not drawn
  by the opaque rasterizer. Parts share the model's vertices, so identity modes and expressions
  move them (jawOpen the lower teeth, PupilDilate_* the pupils; ICT's eyeLook* shapes move the
  lids only: its runtime turns the eyeballs by rotation, which a blendshape model has not). Only face, head and neck
  (vertices [0, 11248)) are ``carved``.
* ``none``: the skin alone, cropped to vertices [0, 14062) (the loader's former default).
* ``merged``: every polygon in one surface with the published UDIM UVs, no parts (inspection).

Skin atlas (``attached``/``none``), the layout the texture stages paint and the texture LDM
trains on. ICT's UVs are UDIM tiles: face (front of the head, ears, front of the neck) in u 0-1,
back of the head, neck and the socket islands in u 1-2, gums 2-3, teeth 3-4, lacrimal 4-6, lashes
6-7, the eyeballs overlapping 0-1. The atlas packs the two skin tiles into one square, both
uniformly scaled (no anisotropy); the face, which DreamFace's maps are about, gets 9 times the
back's texel density:

* face tile 0: ``u' = 0.75 u``, ``v' = 0.25 + 0.75 v`` (top left, 0.75 of the width);
* back tile 1: ``u' = 0.75 + 0.25 (u - 1)``, ``v' = 0.75 + 0.25 v`` (top right, 0.25);
* the rest (the bottom strip and the right column under the back tile) is unused: outside the
  skin (the texture LDM's non-face mask marks it).

Polygons are fan-triangulated keeping their winding. Landmarks: the 68 Multi-PIE vertices of
``vertex_indices.json``, embedded under their usual MediaPipe ids, and in the shipped copy the
rest of the built-in head's MediaPipe contour points and pupils, transferred once from it
(:mod:`.ict_landmarks`), so landmark maps draw ICT with the full contours. Units are
centimetres; ``normalize`` maps the model to the built-in head's frame (head height 1, see
:meth:`HeadModel.normalized`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from headgen.errors import HeadgenError
from headgen.heads.base import HeadModel, HeadPart, LazyHead
from headgen.heads.ict_files import IctSource, read_source
from headgen.heads.ict_regions import ict_regions
from headgen.heads.obj_reader import ObjMesh, read_obj, read_obj_vertices, triangulate
from headgen.registry import register

SKIN_VERTICES = 14062
"""Vertices [0, 14062) are face, head and neck, mouth socket and eye sockets: the skin."""
HEAD_VERTICES = SKIN_VERTICES
CARVED_VERTICES = 11248
"""Vertices [0, 11248) (face, head and neck) are what detail carving displaces."""

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

SKIN_MATERIALS = ("M_Face", "M_BackHead")
SCLERA, IRIS, PUPIL = (0.90, 0.88, 0.85), (0.30, 0.19, 0.11), (0.02, 0.02, 0.02)
IRIS_DEG, PUPIL_DEG = 28.0, 11.0
"""Angular radii about the gaze axis: an iris 12 mm across on a 24 mm eyeball is asin(6/12) = 30 deg;
ICT's recessed iris disc ends at about 25-30 deg; a mid-size pupil (4-5 mm) about 11 deg."""
# ICT material -> (part name, base colour, roughness, alpha). Colours are plausible defaults
# (ICT's MTL has grey Kd for the eyes). ICT's "iris" mesh is the visible eyeball (a sphere whose
# front is the recessed iris disc) and its "sclera" mesh the glossy outer shell over it, cornea
# included: here they are eyeball_* (white, iris and pupil as vertex colours, see eyeball_colors)
# and cornea_* (an overlay). alpha < 1 marks the overlays: the cornea and ICT's transparent
# meshes (Tf 0 in its MTL), exported with alpha blending, not drawn by the opaque rasterizer.
PART_MATERIALS: dict[str, tuple[str, tuple[float, float, float], float, float]] = {
    "M_IrisLeft": ("eyeball_left", SCLERA, 0.25, 1.0),
    "M_ScleraLeft": ("cornea_left", (0.95, 0.95, 0.95), 0.05, 0.1),
    "M_IrisRight": ("eyeball_right", SCLERA, 0.25, 1.0),
    "M_ScleraRight": ("cornea_right", (0.95, 0.95, 0.95), 0.05, 0.1),
    "M_Teeth": ("teeth", (0.86, 0.83, 0.74), 0.3, 1.0),
    "M_GumsTongue": ("gums_tongue", (0.62, 0.25, 0.27), 0.4, 1.0),
    # ICT's lashes are cards meant for an alpha texture of strands; drawn opaque they read as thick
    # black bands round the eyes (close-up render tried), so they are an overlay too.
    "M_EyeLashes": ("eyelashes", (0.05, 0.04, 0.035), 0.8, 0.6),
    "M_LacrimalFluid": ("lacrimal_fluid", (0.90, 0.90, 0.90), 0.05, 0.3),
    "M_EyeBlend": ("eye_blend", (0.80, 0.65, 0.60), 0.5, 0.4),
    "M_EyeOcclusion": ("eye_occlusion", (0.20, 0.15, 0.14), 0.6, 0.35),
}

ATLAS_TILES: dict[int, tuple[float, float, float]] = {0: (0.75, 0.0, 0.25), 1: (0.25, 0.75, 0.75)}
"""UDIM tile -> (scale, u offset, v offset) of the skin atlas (see the module docstring)."""

Layout = Literal["attached", "none", "merged"]

# Multi-PIE / dlib 68-point order -> the MediaPipe id at (about) the same feature.
MULTIPIE68_TO_MEDIAPIPE = (
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,  # jaw
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows (right outer -> inner, left inner -> outer)
    168, 197, 5, 4, 98, 97, 2, 326, 327,  # nose bridge, nose base
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips
)



def eyeball_colors(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[Vp,3] sclera / iris / pupil colours of an eyeball mesh (its vertices in sorted order) by the
    angle about its gaze axis: the direction from the ball's centre to its recessed iris disc (the
    vertices closer to the centre than 95% of the median radius, in the front hemisphere)."""
    index = np.unique(faces)
    p = vertices[index]
    centre = p.mean(0)
    d = p - centre
    r = np.linalg.norm(d, axis=1)
    disc = (r < 0.95 * np.median(r)) & (d[:, 2] > 0)
    axis = d[disc].mean(0) if disc.any() else np.array([0.0, 0.0, 1.0])
    axis = axis / np.linalg.norm(axis)
    angle = np.degrees(np.arccos(np.clip(d @ axis / np.maximum(r, 1e-12), -1.0, 1.0)))
    out = np.tile(np.array(SCLERA), (len(index), 1))
    out[angle < IRIS_DEG] = IRIS
    out[angle < PUPIL_DEG] = PUPIL
    out[angle > 90.0] = PUPIL  # the inside, seen through the pupil's hole (PupilDilate sizes it)
    return out.astype(np.float32)


def skin_atlas_uvs(uvs: np.ndarray) -> np.ndarray:
    """Map UDIM coordinates of the skin tiles (0 and 1) into the skin atlas (module docstring)."""
    tile = np.floor(uvs[:, 0]).astype(np.int64).clip(0, None)
    out = np.empty_like(uvs)
    for t in np.unique(tile):
        if int(t) not in ATLAS_TILES:
            raise HeadgenError(f"skin atlas: UV tile {int(t)} is not a skin tile (0 or 1)")
        scale, du, dv = ATLAS_TILES[int(t)]
        sel = tile == t
        out[sel, 0] = du + scale * (uvs[sel, 0] - t)
        out[sel, 1] = dv + scale * uvs[sel, 1]
    return out


def load_ict_facekit(path: str | Path | None = None, parts: Layout = "attached", num_identity: int | None = None,
                     normalize: bool = True) -> HeadModel:
    """Load ICT-FaceKit: the shipped copy (``path=None``), a FaceXModel folder or a packed file.

    ``parts``: ``attached``, ``none`` or ``merged`` (module docstring); ``num_identity``: only the
    first N identity modes (None: all); ``normalize``: head height 1 (False keeps centimetres).
    """
    if parts not in ("attached", "none", "merged"):
        raise HeadgenError(f"ICT-FaceKit parts must be attached, none or merged, got {parts!r}")
    return build_model(read_source(path, num_identity), parts, normalize)


def build_model(src: IctSource, parts: Layout = "attached", normalize: bool = True) -> HeadModel:
    """The :class:`HeadModel` of an ICT source in one of the layouts."""
    obj = src.obj
    V = len(obj.vertices)
    faces, uv_faces, owner = triangulate(obj)
    if uv_faces is None:
        raise HeadgenError(f"{src.origin}: faces have no texture indices (the ICT mesh is UV-mapped)")
    face_material = obj.polygon_material[owner]
    lm_verts = [int(i) for i in src.index.get("idx_to_landmark_verts", [])]
    if lm_verts and len(lm_verts) != len(MULTIPIE68_TO_MEDIAPIPE):
        raise HeadgenError(f"{src.origin}: idx_to_landmark_verts has {len(lm_verts)} entries, expected 68")
    if any(not 0 <= i < V for i in lm_verts):
        raise HeadgenError(f"{src.origin}: idx_to_landmark_verts refers to vertices outside the mesh")

    v, identity, expressions = obj.vertices, src.identity, src.expressions
    uvs = obj.uvs
    face_tile_uv = np.full((V, 2), np.nan)
    if "M_Face" in obj.materials:
        sel = face_material == obj.materials.index("M_Face")
        face_tile_uv[faces[sel].reshape(-1)] = obj.uvs[uv_faces[sel].reshape(-1)]
    head_parts: list[HeadPart] = []
    carved = None
    if parts != "merged":
        if V < SKIN_VERTICES:
            raise HeadgenError(f"{src.origin}: {V} vertices, the ICT skin needs the first {SKIN_VERTICES}")
        skin_ids = [i for i, m in enumerate(obj.materials) if m in SKIN_MATERIALS]
        skin = np.isin(face_material, skin_ids)
        if parts == "attached":
            for i, name in enumerate(obj.materials):
                if name in PART_MATERIALS and (face_material == i).any():
                    pname, color, rough, alpha = PART_MATERIALS[name]
                    pf = faces[face_material == i]
                    colors = eyeball_colors(v, pf) if pname.startswith("eyeball") else None
                    head_parts.append(HeadPart(pname, pf, color, rough, colors, alpha))
        else:
            skin &= np.all(faces < SKIN_VERTICES, axis=1)
            v, identity, expressions = v[:SKIN_VERTICES], identity[:, :SKIN_VERTICES], expressions[:, :SKIN_VERTICES]
            V = SKIN_VERTICES
        faces, uv_faces, face_material = faces[skin], uv_faces[skin], face_material[skin]
        used_uv, uv_faces = np.unique(uv_faces, return_inverse=True)
        uv_faces = uv_faces.reshape(-1, 3)
        uvs = skin_atlas_uvs(obj.uvs[used_uv])
        carved = np.zeros(V, dtype=bool)
        carved[:CARVED_VERTICES] = True

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
    if src.mediapipe is not None:  # the rest of MediaPipe's contours, transferred (ict_landmarks)
        index = {tuple(f): i for i, f in enumerate(faces.tolist())}
        for mp_id, tri, b in zip(*src.mediapipe):
            f = index.get(tuple(int(i) for i in tri))
            if f is not None:
                lm_faces.append(f)
                lm_bary.append(b)
                lm_ids.append(int(mp_id))

    head_part = v[: min(V, SKIN_VERTICES)]
    crown = float(head_part[:, 1].max())
    chin = v[lm_verts[8]] if lm_verts else None
    scale = crown - float(chin[1]) if chin is not None else float(np.ptp(head_part[:, 1]))
    model = HeadModel(
        name="ict-facekit",
        v_template=v,
        faces=faces,
        identity_basis=identity,
        expression_basis=expressions,
        expression_names=src.expression_names,
        landmark_faces=np.array(lm_faces, dtype=np.int64),
        landmark_bary=np.array(lm_bary, dtype=np.float32).reshape(-1, 3),
        landmark_ids=np.array(lm_ids, dtype=np.int64),
        uvs=uvs,
        uv_faces=uv_faces,
        parts=head_parts,
        carved=carved,
        scale=scale,
        units="cm",
        meta={"source": src.origin, "materials": obj.materials, "face_material": face_material, "layout": parts},
    )
    if normalize and chin is None:
        raise HeadgenError(f"{src.origin}: normalize needs idx_to_landmark_verts (the chin landmark)")
    if chin is None:
        return model
    norm = model.normalized(chin=chin)
    nv = norm.v_template.numpy().astype(np.float64)
    skin = np.zeros(V, dtype=bool)
    skin[: min(V, SKIN_VERTICES)] = True
    sockets = np.zeros(V, dtype=bool)
    sockets[GEOMETRY_RANGES["mouth_socket"][0]: min(V, SKIN_VERTICES)] = True
    regions = ict_regions(nv, skin, face_tile_uv[:V], sockets, nv[lm_verts[:17]],
                          float(nv[lm_verts[36:48], 1].mean()))
    return replace(norm if normalize else model, regions=regions)


@register("head", "ict-facekit")
class IctFaceKitHead(LazyHead):
    """ICT-FaceKit (MIT licence): the copy shipped with headgen, or a FaceXModel folder."""

    @dataclass
    class Config:
        path: str | None = None
        """None: the copy shipped with headgen (100 identities, 57 expressions). Else a FaceXModel folder
        (generic_neutral_mesh.obj, identityNNN.obj, vertex_indices.json) or a packed .npz."""
        parts: str = "attached"
        """attached: skin + eyes, teeth, gums, lashes as parts; none: the skin alone; merged: one surface."""
        num_identity: int | None = None
        """Load only the first N identity modes (None: all)."""
        normalize: bool = True
        """Scale and centre to the built-in head's frame (head height 1); false keeps centimetres."""

    def build(self) -> HeadModel:
        return load_ict_facekit(self.cfg.path, self.cfg.parts, self.cfg.num_identity,  # type: ignore[arg-type]
                                self.cfg.normalize)


__all__ = ["GEOMETRY_RANGES", "HEAD_VERTICES", "IctFaceKitHead", "ObjMesh", "build_model", "load_ict_facekit",
           "read_obj", "read_obj_vertices", "skin_atlas_uvs"]
