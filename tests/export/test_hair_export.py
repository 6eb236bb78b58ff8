"""Exports of a head with hair: GLB second mesh/material, hair.obj beside head.obj, previews, animation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pygltflib
import pytest
import torch
import trimesh

from headgen.config import parse
from headgen.export.animation import AnimationExporter, render_expressions
from headgen.export.gltf import GlbExporter
from headgen.export.obj import ObjExporter
from headgen.export.preview import PreviewExporter, orbit_cameras, render_views
from headgen.hair import PRESET_COLOURS, HairFit, builtin_library
from headgen.heads.builtin import load_builtin_head
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig

BLONDE = PRESET_COLOURS["blonde"]


@pytest.fixture(scope="module")
def ctx():
    return SimpleNamespace(head=load_builtin_head("low"), device=torch.device("cpu"))


@pytest.fixture(scope="module")
def rep(ctx, tmp_path_factory):
    rep = ParametricMesh(parse(ParametricMeshConfig, {"normal_map_size": 16, "texture_size": 16}), ctx)
    with torch.no_grad():
        rep.albedo[:] = torch.tensor([0.2, 0.6, 0.3])  # a green head: easy to tell from the hair
    style = builtin_library(ctx.head, tmp_path_factory.mktemp("hair-cache")).get("bob")
    verts = HairFit(ctx.head.v_template).fit(style, rep.vertices().detach())
    rep.set_hair(verts, style.faces, torch.tensor(BLONDE), style="bob", colour="blonde")
    return rep


def test_glb_has_the_hair_as_a_second_mesh_with_its_colour(rep, tmp_path):
    path = GlbExporter(GlbExporter.Config()).export(rep, None, tmp_path)["glb"]
    doc = pygltflib.GLTF2().load(path)
    assert [m.name for m in doc.meshes] == ["head", "hair"] and [n.mesh for n in doc.nodes] == [0, 1]
    assert doc.scenes[0].nodes == [0, 1] and [m.name for m in doc.materials] == ["head", "hair"]
    head_prim, hair_prim = doc.meshes[0].primitives[0], doc.meshes[1].primitives[0]
    assert head_prim.material == 0 and hair_prim.material == 1
    assert len(head_prim.targets) == len(doc.meshes[0].extras["targetNames"]) > 20 and not hair_prim.targets
    hair_mat = doc.materials[1]
    assert hair_mat.pbrMetallicRoughness.baseColorFactor == pytest.approx([*BLONDE, 1.0], abs=1e-6)
    assert hair_mat.pbrMetallicRoughness.baseColorTexture is None and hair_mat.doubleSided
    assert doc.materials[0].pbrMetallicRoughness.baseColorTexture is not None
    acc = doc.accessors[hair_prim.attributes.POSITION]
    assert acc.count == rep.hair_vertices.shape[0]  # no UVs: no seams to split
    assert acc.min == pytest.approx(rep.hair_vertices.min(0).values.tolist(), abs=1e-6)
    assert doc.accessors[hair_prim.indices].count == 3 * rep.hair_faces.shape[0]
    # trimesh reads it back as a scene of two meshes
    scene = trimesh.load(path, force="scene")
    assert len(scene.geometry) == 2


def test_obj_writes_hair_obj_beside_head_obj(rep, tmp_path):
    written = ObjExporter(ObjExporter.Config()).export(rep, None, tmp_path)
    assert {"obj", "mtl", "hair_obj", "hair_mtl"} <= set(written)
    head = trimesh.load(written["obj"], process=False)  # still one mesh, as before the hair
    assert isinstance(head, trimesh.Trimesh) and head.visual.uv is not None
    hair = trimesh.load(written["hair_obj"], process=False, force="mesh")
    assert len(hair.vertices) == rep.hair_vertices.shape[0] and len(hair.faces) == rep.hair_faces.shape[0]
    assert np.allclose(hair.vertices, rep.hair_vertices.numpy(), atol=1e-5)
    mtl = (tmp_path / "hair.mtl").read_text()
    assert "newmtl hair" in mtl and f"Kd {BLONDE[0]:.4f} {BLONDE[1]:.4f} {BLONDE[2]:.4f}" in mtl
    text = (tmp_path / "hair.obj").read_text()
    assert "mtllib hair.mtl" in text and "usemtl hair" in text


def test_previews_and_animation_draw_the_hair(rep, ctx, tmp_path):
    preview = PreviewExporter(PreviewExporter.Config(resolution=64, turntable_frames=2, turntable_resolution=48))
    written = preview.export(rep, ctx, tmp_path)
    assert {"preview", "turntable"} <= set(written)
    surface = rep.export_surface()
    bald = rep.export_surface()
    bald.parts = []
    cams = orbit_cameras([0.0, 180.0], 5.0, 3.0, 30.0, 64)
    with_hair, without = (render_views(s, cams, "rgb", 64).astype(float) / 255 for s in (surface, bald))
    # seen from behind, the back of the head is blonde hair, not the green head
    back = with_hair[1, 20:30, 28:36].reshape(-1, 3).mean(0)
    assert abs(back[0] - back[1]) < 0.25 and back[0] > back[2] + 0.1  # warm blonde under the light
    assert without[1, 20:30, 28:36, 1].mean() > without[1, 20:30, 28:36, 0].mean() + 0.1  # green
    cfg = AnimationExporter.Config(frames=2, resolution=48, azimuth=180.0)
    names, deltas = rep.expression_deltas()
    weights = torch.zeros(1, len(names))
    frame_hair = render_expressions(surface, deltas, weights, cfg)[0].astype(float)
    frame_bald = render_expressions(bald, deltas, weights, cfg)[0].astype(float)
    assert np.abs(frame_hair - frame_bald).mean() > 5.0
