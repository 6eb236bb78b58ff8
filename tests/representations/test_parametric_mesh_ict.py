"""The DreamFace parametric mesh on the shipped ICT-FaceKit: carving, attached parts, exports."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pygltflib
import pytest
import torch

from headgen.cameras import Cameras
from headgen.config import build, parse
from headgen.export.gltf import GlbExporter, glb_document
from headgen.export.obj import ObjExporter
from headgen.heads.ict import CARVED_VERTICES, IRIS, SKIN_VERTICES
from headgen.render.mesh_renderer import MeshRenderer
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig


@pytest.fixture(scope="module")
def ctx():
    head = build("head", {"type": "ict-facekit"}).load()
    return SimpleNamespace(head=head, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def rep(ctx):
    return ParametricMesh(parse(ParametricMeshConfig, {"num_identity": 100, "normal_map_size": 32,
                                                       "texture_size": 64, "texture": "both"}), ctx)


def front(n: int = 1, size: int = 192) -> Cameras:
    return Cameras.from_spherical(torch.zeros(n), torch.zeros(n), torch.full((n,), 2.2), torch.full((n,), 30.0), size)


def test_carving_moves_the_skin_only(rep):
    with torch.no_grad():
        rep.displacement.fill_(0.01)
    try:
        with torch.no_grad():
            moved = (rep.vertices() - rep.coarse_vertices()).norm(dim=-1)
    finally:
        with torch.no_grad():
            rep.displacement.zero_()
    assert bool((moved[:CARVED_VERTICES] > 0.009).float().mean() > 0.99)
    assert float(moved[CARVED_VERTICES:].max()) == 0.0  # sockets, eyes, teeth: never carved


def test_render_draws_the_eyes(rep, ctx):
    surface = rep.render_input()
    assert sorted(p.name for p in surface.parts) == ["eyeball_left", "eyeball_right", "gums_tongue", "teeth"]
    with torch.no_grad():
        img = MeshRenderer(MeshRenderer.Config(resolution=192, background="white")).render(
            surface, front(), None, modes=("albedo",))["albedo"][0]
    iris = ((img - torch.tensor(IRIS)).abs().amax(-1) < 0.02)
    assert iris.sum() > 20  # both irises are drawn, left and right of the midline
    cols = iris.nonzero()[:, 1].float()
    assert (cols < 96).sum() > 10 and (cols > 96).sum() > 10


def test_latent_render_uses_part_latents(ctx):
    class Encoder:
        device = torch.device("cpu")

        def encode(self, images):
            return images.permute(0, 3, 1, 2)[:, [0, 1, 2, 0]] * 2.0  # a 4-channel "VAE"

        def decode(self, latents):
            return latents[:, :3].permute(0, 2, 3, 1)

    rep = ParametricMesh(parse(ParametricMeshConfig, {"num_identity": 4, "texture": "latent",
                                                      "normal_map_size": 0}), ctx)
    rep.attach(Encoder())
    parts = {p.name: p for p in rep.render_input().parts}
    assert torch.allclose(parts["teeth"].base_latent, torch.tensor([0.86, 0.83, 0.74, 0.86]) * 2.0)
    with torch.no_grad():
        lat = MeshRenderer(MeshRenderer.Config(resolution=64)).render(rep.render_input(), front(size=64), None,
                                                                     modes=("latent",))["latent"]
    assert lat.shape == (1, 64, 64, 4) and torch.isfinite(lat).all()


def test_exports_carry_the_parts_with_their_morph_targets(rep, tmp_path):
    surface = rep.export_surface()
    assert surface.mesh.num_vertices == SKIN_VERTICES  # the skin without the parts' vertices
    names, deltas = rep.expression_deltas()
    assert deltas.shape == (len(names), SKIN_VERTICES, 3)
    parts = {p.name: p for p in surface.parts}
    assert len(parts) == 10 and parts["eyelashes"].alpha < 1 and parts["teeth"].alpha == 1
    assert parts["teeth"].morph_deltas.shape == (len(names), parts["teeth"].mesh.num_vertices, 3)
    doc, _ = glb_document(surface, (names, deltas))
    meshes = {m.name: m for m in doc.meshes}
    assert len(meshes) == 11 and len(doc.nodes) == 11
    for part in ("teeth", "eyeball_left", "eyelashes"):
        assert meshes[part].extras["targetNames"] == names and len(meshes[part].primitives[0].targets) == len(names)
    mats = {m.name: m for m in doc.materials}
    assert mats["eyelashes"].alphaMode == "BLEND" and mats["teeth"].alphaMode in (None, "OPAQUE")
    assert math.isclose(mats["teeth"].pbrMetallicRoughness.roughnessFactor, 0.3, rel_tol=1e-6)
    assert meshes["eyeball_left"].primitives[0].attributes.COLOR_0 is not None
    # jawOpen's target moves the lower teeth in the file
    jaw = names.index("jawOpen")
    teeth = meshes["teeth"].primitives[0].targets[jaw].POSITION
    assert max(abs(x) for x in doc.accessors[teeth].min + doc.accessors[teeth].max) > 0.01
    # files on disk
    ctx = SimpleNamespace(device=torch.device("cpu"))
    GlbExporter(GlbExporter.Config()).export(rep, ctx, tmp_path)
    assert len(pygltflib.GLTF2().load(str(tmp_path / "head.glb")).meshes) == 11
    written = ObjExporter(ObjExporter.Config()).export(rep, ctx, tmp_path)
    for part in ("teeth", "eyeball_left", "eyelashes", "gums_tongue"):
        assert (tmp_path / f"{part}.obj").is_file() and f"{part}_obj" in written
    head_obj = (tmp_path / "head.obj").read_text()
    assert head_obj.count("\nv ") == SKIN_VERTICES
