"""head.glb (glTF 2.0 with PBR textures and expression morph targets) and the expression video."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import numpy as np
import pygltflib
import pytest
import torch
import trimesh

from headgen.animation.clip import keyframe_weights, smoothstep_frames
from headgen.config import build, parse
from headgen.errors import HeadgenError
from headgen.export.animation import AnimationExporter, render_expressions
from headgen.export.gltf import GlbExporter, split_uv_seams
from headgen.export.images import to_uint8
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig

_NUM = {5126: np.float32, 5125: np.uint32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _array(doc: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = doc.accessors[index]
    view = doc.bufferViews[acc.bufferView]
    blob = doc.binary_blob()
    start = view.byteOffset + (acc.byteOffset or 0)
    data = np.frombuffer(blob, dtype=_NUM[acc.componentType], count=acc.count * _WIDTH[acc.type], offset=start)
    return data.reshape(acc.count, -1) if _WIDTH[acc.type] > 1 else data


def _image(doc: pygltflib.GLTF2, texture: int) -> np.ndarray:
    import imageio.v3 as iio

    img = doc.images[doc.textures[texture].source]
    view = doc.bufferViews[img.bufferView]
    assert img.mimeType == "image/png"
    return iio.imread(io.BytesIO(doc.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength]))


@pytest.fixture(scope="module")
def ctx():
    head = build("head", {"type": "builtin"}).load()
    return SimpleNamespace(head=head, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def rep(ctx):
    rep = ParametricMesh(parse(ParametricMeshConfig, {"normal_map_size": 32, "texture_size": 48}), ctx)
    with torch.no_grad():
        rep.albedo[..., 0] = torch.linspace(0, 1, 48)[None, :]  # red grows to the right
        rep.albedo[..., 1] = torch.linspace(1, 0, 48)[:, None]  # green fades downward
        rep.normal_map[8:16, 8:16] = torch.tensor([0.3, -0.2, 1.0])
    return rep


@pytest.fixture(scope="module")
def glb(rep, ctx, tmp_path_factory):
    out = tmp_path_factory.mktemp("glb")
    written = GlbExporter(GlbExporter.Config()).export(rep, ctx, out)
    return written["glb"]


def test_glb_geometry_uvs_and_morph_targets(glb, ctx):
    head = ctx.head
    doc = pygltflib.GLTF2.load(glb)
    assert len(doc.meshes) == 1 and len(doc.meshes[0].primitives) == 1
    prim = doc.meshes[0].primitives[0]
    assert all(v.byteOffset % 4 == 0 for v in doc.bufferViews)
    pos = _array(doc, prim.attributes.POSITION)
    uv = _array(doc, prim.attributes.TEXCOORD_0)
    faces = _array(doc, prim.indices).reshape(-1, 3)
    # one output vertex per distinct (position, uv) corner pair
    pairs = {(int(p), int(t)) for p, t in zip(head.faces.reshape(-1).tolist(), head.uv_faces.reshape(-1).tolist())}
    assert len(pos) == len(pairs) == len(uv)
    assert faces.shape == tuple(head.faces.shape)
    # face by face, corners land on the source positions and the flipped source UVs
    assert np.allclose(pos[faces], head.v_template.numpy()[head.faces.numpy()], atol=1e-6)
    src_uv = head.uvs.numpy()[head.uv_faces.numpy()]
    assert np.allclose(uv[faces][..., 0], src_uv[..., 0], atol=1e-6)
    assert np.allclose(uv[faces][..., 1], 1.0 - src_uv[..., 1], atol=1e-6)
    assert not np.allclose(uv[faces][..., 1], src_uv[..., 1], atol=1e-3)
    acc = doc.accessors[prim.attributes.POSITION]
    assert np.allclose(acc.min, pos.min(0)) and np.allclose(acc.max, pos.max(0))

    normals = _array(doc, prim.attributes.NORMAL)
    tangents = _array(doc, prim.attributes.TANGENT)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)
    assert np.allclose(np.linalg.norm(tangents[:, :3], axis=1), 1.0, atol=1e-4)
    assert set(np.unique(tangents[:, 3]).tolist()) <= {-1.0, 1.0}
    assert np.abs((normals * tangents[:, :3]).sum(1)).max() < 1e-4

    names = doc.meshes[0].extras["targetNames"]
    assert names == head.expression_names and len(prim.targets) == head.num_expression
    assert doc.meshes[0].weights == [0.0] * head.num_expression
    src = np.zeros(len(pos), dtype=np.int64)
    src[faces.reshape(-1)] = head.faces.numpy().reshape(-1)
    for e in (0, names.index("mouthSmile_L"), names.index("eyeBlink_R"), len(names) - 1):
        delta = _array(doc, prim.targets[e]["POSITION"])
        expected = head.expression_basis[e].numpy()[src]
        assert np.abs(expected).max() > 1e-4
        assert np.allclose(delta, expected, atol=1e-7)
        tacc = doc.accessors[prim.targets[e]["POSITION"]]
        assert np.allclose(tacc.min, delta.min(0)) and np.allclose(tacc.max, delta.max(0))
        assert prim.targets[e].get("NORMAL") is None  # morph_normals is off by default


def test_glb_pbr_material_and_textures(glb, rep):
    doc = pygltflib.GLTF2.load(glb)
    mat = doc.materials[doc.meshes[0].primitives[0].material]
    pbr = mat.pbrMetallicRoughness
    assert pbr.metallicFactor == 0.0 and pbr.roughnessFactor == pytest.approx(0.6)
    assert pbr.metallicRoughnessTexture is None  # no specular map on the parametric mesh
    base = _image(doc, pbr.baseColorTexture.index)
    assert base.shape == (48, 48, 3)
    assert np.array_equal(base, to_uint8(rep.albedo.detach()))
    assert base[0, 47, 0] > 250 and base[0, 0, 1] > 250 and base[47, 0, 1] < 5  # stored top-down
    normal = _image(doc, mat.normalTexture.index)
    assert normal.shape == (32, 32, 3)
    assert np.array_equal(normal, to_uint8(rep.normal_map_image()))

    scene = trimesh.load(glb)
    geom = next(iter(scene.geometry.values()))
    assert len(geom.vertices) == doc.accessors[doc.meshes[0].primitives[0].attributes.POSITION].count
    assert len(geom.faces) == rep.faces.shape[0]
    assert np.asarray(geom.visual.material.baseColorTexture).shape[:2] == (48, 48)


class _Quad:
    """Two triangles whose UVs are cut along the shared edge; a specular map; optional blendshapes."""

    registered_name = "test-quad"

    def __init__(self, names=()):
        v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
        faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
        uv = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.5, 0.6], [0.0, 0.6], [0.0, 1.0]])
        self.mesh = Mesh(v, faces, uv, torch.tensor([[0, 1, 2], [4, 3, 5]]))
        self.names = list(names)

    def export_surface(self):
        surface = SurfaceGeometry(self.mesh, albedo_map=torch.full((8, 8, 3), 0.5))
        surface.specular_map = torch.linspace(0, 1, 16).repeat(16, 1)[..., None]
        return surface

    def expression_deltas(self):
        deltas = torch.zeros(len(self.names), 4, 3)
        if self.names:
            deltas[0, :, 2] = torch.tensor([0.0, 0.5, 0.0, 0.0])  # lift one corner: normals tilt
        return self.names, deltas


def test_seam_split_and_specular_roughness(tmp_path):
    split = split_uv_seams(_Quad().mesh)
    # corners (0,0) (1,1) (2,2) | (0,4) (2,3) (3,5): vertices 0 and 2 are split by the seam
    assert split.pos_index.tolist() == [0, 0, 1, 2, 2, 3] and split.uv_index.tolist() == [0, 4, 1, 2, 3, 5]
    assert split.faces.tolist() == [[0, 2, 3], [1, 4, 5]]

    written = GlbExporter(GlbExporter.Config(filename="quad.glb")).export(_Quad(), None, tmp_path)
    doc = pygltflib.GLTF2.load(written["glb"])
    prim = doc.meshes[0].primitives[0]
    assert prim.targets == [] and "targetNames" not in (doc.meshes[0].extras or {})
    assert prim.attributes.TANGENT is None  # no normal map, no tangents
    pbr = doc.materials[0].pbrMetallicRoughness
    assert pbr.roughnessFactor == 1.0
    mr = _image(doc, pbr.metallicRoughnessTexture.index)
    assert mr.shape == (16, 16, 3)
    expected = to_uint8(1.0 - torch.linspace(0, 1, 16).numpy())
    assert np.array_equal(mr[5, :, 1], expected) and (mr[..., 2] == 0).all() and (mr[..., 0] == 255).all()


def test_glb_morph_normals_from_expression_deltas(tmp_path):
    cfg = GlbExporter.Config(morph_normals=True)
    doc = pygltflib.GLTF2.load(GlbExporter(cfg).export(_Quad(["lift", "still"]), None, tmp_path)["glb"])
    prim = doc.meshes[0].primitives[0]
    assert doc.meshes[0].extras["targetNames"] == ["lift", "still"] and len(prim.targets) == 2
    lift = _array(doc, prim.targets[0]["NORMAL"])
    assert np.abs(lift).max() > 0.1 and np.abs(_array(doc, prim.targets[1]["NORMAL"])).max() == 0.0
    pos = _array(doc, prim.targets[0]["POSITION"])
    assert pos[:, 2].tolist() == [0.0, 0.0, 0.5, 0.0, 0.0, 0.0]  # source vertex 1 is output vertex 2


def test_glb_rejects_bad_filename():
    with pytest.raises(HeadgenError, match="must end with .glb"):
        GlbExporter(GlbExporter.Config(filename="head.gltf"))


def test_keyframes_and_interpolation(caplog):
    names = ["jawOpen", "eyeBlink_L"]
    keys = keyframe_weights([{}, {"jawOpen": 1.0, "cheekPuff": 0.5}], names, strict=False)
    assert keys.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    w = smoothstep_frames(np.array([[0.0], [1.0], [0.0]]), 5)
    assert w[:, 0].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    w = smoothstep_frames(np.array([[0.0], [1.0]]), 5)
    assert w[1, 0] == pytest.approx(0.15625)  # smoothstep(0.25)
    with caplog.at_level(logging.INFO, logger="headgen.animation.clip"):
        keyframe_weights([{"browInnerUp": 1.0}, {"jawOpen": 1.0}], names, strict=False)
    assert "browInnerUp" in caplog.text
    with pytest.raises(HeadgenError, match="did you mean 'jawOpen'"):
        keyframe_weights([{}, {"jawopen": 1.0}], names, strict=True)
    with pytest.raises(HeadgenError, match="none of the sequence's expressions"):
        keyframe_weights([{}, {"mouthSmile_L": 1.0}], names, strict=False)


def test_animation_video_moves_the_mouth(rep, ctx, tmp_path):
    import imageio.v3 as iio

    cfg = AnimationExporter.Config(frames=3, resolution=64, sequence=[{}, {"jawOpen": 1.0}, {}])
    written = AnimationExporter(cfg).export(rep, ctx, tmp_path)
    video = iio.imread(written["animation"])
    assert video.shape == (3, 64, 64, 3)
    assert np.abs(video[1].astype(int) - video[0].astype(int)).max() > 40

    # the same frames before encoding: neutral twice, the jaw open in between
    names = ctx.head.expression_names
    w = torch.zeros(3, len(names))
    w[1, names.index("jawOpen")] = 1.0
    frames = render_expressions(rep.export_surface(), ctx.head.expression_basis, w, cfg)
    assert np.array_equal(frames[0], frames[2])
    changed = np.abs(frames[1].astype(int) - frames[0].astype(int)).max(-1) > 30
    rows = np.nonzero(changed)[0]
    assert len(rows) > 10 and rows.mean() > 32  # the jaw is below the image centre
    assert not changed[:20].any()  # the top of the head stays put


def test_animation_needs_expressions(rep, ctx, tmp_path):
    with pytest.raises(HeadgenError, match="has no expression blendshapes"):
        AnimationExporter(AnimationExporter.Config(frames=2, resolution=32)).export(_Quad(), ctx, tmp_path)
    with pytest.raises(HeadgenError, match="none of the sequence's expressions"):
        AnimationExporter(AnimationExporter.Config(frames=2, resolution=32)).export(_Quad(["a"]), ctx, tmp_path)
    cfg = AnimationExporter.Config(frames=2, resolution=32, sequence=[{}, {"jawOpenn": 1.0}])
    with pytest.raises(HeadgenError, match="did you mean 'jawOpen'"):
        AnimationExporter(cfg).export(rep, ctx, tmp_path)
