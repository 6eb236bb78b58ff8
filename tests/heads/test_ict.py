"""ICT-FaceKit loader: the real FaceXModel subset (when present) and a small synthetic folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from headgen.errors import HeadgenError
from headgen.heads.ict import HEAD_VERTICES, IctFaceKitHead, load_ict_facekit, read_obj

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ict-facekit" / "FaceXModel"
needs_real = pytest.mark.skipif(not (REAL / "generic_neutral_mesh.obj").is_file(),
                                reason=f"ICT-FaceKit files not found at {REAL}")


# --- the real files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full():
    return load_ict_facekit(REAL, parts="merged", normalize=False)


@needs_real
def test_real_full_model(full):
    assert full.num_vertices == 26719 and full.uvs.shape == (28911, 2)
    polys = [ln for ln in (REAL / "generic_neutral_mesh.obj").read_text().splitlines() if ln.startswith("f ")]
    corners = np.array([len(p.split()) - 1 for p in polys])
    assert full.num_faces == int((corners - 2).sum())  # quads -> 2 triangles, triangles -> 1
    assert (corners == 4).sum() > 20000 and (corners == 3).sum() > 0
    assert len(full.meta["materials"]) == 12 and len(full.meta["face_material"]) == full.num_faces
    assert full.num_identity == 8
    index = json.loads((REAL / "vertex_indices.json").read_text())
    present = [n for n in index["expressions"] if (REAL / f"{n}.obj").is_file()]
    assert full.expression_names == present and len(present) >= 10
    assert {"jawOpen", "eyeBlink_L", "mouthSmile_R"} <= set(full.expression_names)
    assert full.units == "cm" and 20 < full.scale < 25  # chin to crown of an adult head
    # An identity mode is its mesh minus the neutral.
    first = np.array([ln.split()[1:4] for ln in (REAL / "identity000.obj").read_text().splitlines()
                      if ln.startswith("v ")], dtype=np.float64)
    assert np.allclose(full.identity_basis[0].numpy(), first - full.v_template.numpy(), atol=1e-4)
    jaw = full.expression_basis[full.expression_names.index("jawOpen")].numpy()
    assert np.abs(jaw).max() > 1.0 and np.abs(jaw[:, 1]).max() > 1.0  # the jaw drops by > 1 cm
    # Quads were split keeping their winding: the head points outward (face normals vs. radial).
    v, f = full.v_template.numpy(), full.faces.numpy()[: 9000]
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = v[f].mean(1) - v[:9409].mean(0)
    assert (np.einsum("fk,fk->f", n, out) > 0).mean() > 0.85


@needs_real
def test_real_cropped_model():
    head = load_ict_facekit(REAL, parts="none")  # the skin alone, normalized
    assert head.num_vertices == HEAD_VERTICES == 14062 and not head.parts
    assert int(head.faces.max()) < 14062 and head.num_faces > 25000
    assert int(head.uv_faces.max()) == len(head.uvs) - 1  # UVs compacted to those used
    assert 0 <= float(head.uvs.min()) and float(head.uvs.max()) <= 1  # in the skin atlas
    assert head.num_identity == 8 and head.identity_basis.shape[1] == 14062
    assert head.scale == pytest.approx(1.0) and head.units == "head height"
    L = head.landmarks_mediapipe(head.v_template.numpy())
    assert L[152, 1] == pytest.approx(-0.5, abs=1e-5)
    assert L[263, 0] > 0 > L[33, 0] and L[291, 0] > 0 > L[61, 0]  # MediaPipe left = +x
    assert L[33, 1] > L[61, 1] and L[4, 2] > L[33, 2]
    three = load_ict_facekit(REAL, num_identity=3)
    assert three.num_identity == 3
    with pytest.raises(HeadgenError, match="num_identity=9"):
        load_ict_facekit(REAL, num_identity=9)


@needs_real
def test_registered_ict_head():
    assert IctFaceKitHead.registered_name == "ict-facekit"
    head = IctFaceKitHead(IctFaceKitHead.Config(path=str(REAL), num_identity=2)).load()
    assert head.num_identity == 2 and head.num_vertices == 26719 and len(head.parts) == 10


# --- a synthetic folder --------------------------------------------------------------------------
NEUTRAL = """# tiny ICT-like mesh: a square (quad) and a triangle, separate UVs and a seam
mtllib ICTFaceModelMaterial.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 2 0 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vt 0.5 0.5
vt 0.9 0.1
usemtl M_Face
f 1/1 2/2 3/3 4/4
usemtl M_BackHead
f 2/6 5/5 3/3
"""


def obj_with(vertices: np.ndarray) -> str:
    return "".join(f"v {x} {y} {z}\n" for x, y, z in vertices) + "f 1 2 3\n"


@pytest.fixture
def tiny(tmp_path) -> Path:
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    (folder / "generic_neutral_mesh.obj").write_text(NEUTRAL)
    base = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], dtype=float)
    for i in range(3):
        (folder / f"identity{i:03d}.obj").write_text(obj_with(base + 0.1 * (i + 1) * np.eye(5, 3)))
    (folder / "jawOpen.obj").write_text(obj_with(base + np.array([0, -0.5, 0])))
    (folder / "eyeBlink_L.obj").write_text(obj_with(base * 2))
    (folder / "vertex_indices.json").write_text(json.dumps(
        {"expressions": ["eyeBlink_L", "jawOpen", "mouthSmile_L"]}))
    return folder


def test_synthetic_folder(tiny):
    head = load_ict_facekit(tiny, parts="merged", normalize=False)
    assert head.num_vertices == 5 and head.num_faces == 3
    assert head.faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]  # quad fan keeps its winding
    assert head.uv_faces.tolist() == [[0, 1, 2], [0, 2, 3], [5, 4, 2]]  # UV indices separate
    assert head.uvs.shape == (6, 2)
    assert head.meta["materials"] == ["M_Face", "M_BackHead"]
    assert list(head.meta["face_material"]) == [0, 0, 1]
    assert head.num_identity == 3
    assert np.allclose(head.identity_basis[1].numpy(), 0.2 * np.eye(5, 3))
    # Expressions in the order of vertex_indices.json, those present only.
    assert head.expression_names == ["eyeBlink_L", "jawOpen"]
    assert np.allclose(head.expression_basis[1].numpy()[:, 1], -0.5)
    v = head.vertices(np.array([1.0, 0.0]), {"jawOpen": 1.0})
    assert np.allclose(v[0], [0.1, -0.5, 0.0])
    assert load_ict_facekit(tiny, parts="merged", normalize=False, num_identity=1).num_identity == 1


def test_synthetic_folder_errors(tiny, tmp_path):
    with pytest.raises(HeadgenError, match="folder not found"):
        load_ict_facekit(tmp_path / "nowhere")
    with pytest.raises(HeadgenError, match="the ICT skin needs the first 14062"):
        load_ict_facekit(tiny, parts="none", normalize=False)
    with pytest.raises(HeadgenError, match="normalize needs idx_to_landmark_verts"):
        load_ict_facekit(tiny, parts="merged", normalize=True)
    (tiny / "identity001.obj").write_text(obj_with(np.zeros((4, 3))))
    with pytest.raises(HeadgenError, match="4 vertices, expected 5"):
        load_ict_facekit(tiny, parts="merged", normalize=False)
    (tiny / "identity001.obj").unlink()
    (tiny / "generic_neutral_mesh.obj").write_text(NEUTRAL.replace("v 1 1 0", "v 1 one 0"))
    with pytest.raises(HeadgenError, match=r"generic_neutral_mesh.obj:5: malformed OBJ line"):
        load_ict_facekit(tiny, parts="merged", normalize=False)
    (tiny / "generic_neutral_mesh.obj").write_text(NEUTRAL + "f 1/1 2/2 9/3\n")
    with pytest.raises(HeadgenError, match="does not exist"):
        load_ict_facekit(tiny, parts="merged", normalize=False)
    (tiny / "generic_neutral_mesh.obj").write_text(NEUTRAL)
    (tiny / "vertex_indices.json").write_text("{not json")
    with pytest.raises(HeadgenError, match="not valid JSON"):
        load_ict_facekit(tiny, parts="merged", normalize=False)
    (tiny / "vertex_indices.json").unlink()
    with pytest.raises(HeadgenError, match="vertex_indices.json is missing"):
        load_ict_facekit(tiny, parts="merged", normalize=False)
    (tiny / "generic_neutral_mesh.obj").unlink()
    with pytest.raises(HeadgenError, match="generic_neutral_mesh.obj is missing"):
        load_ict_facekit(tiny)


def test_read_obj_relative_and_plain_indices(tmp_path):
    p = tmp_path / "m.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf -3/-3 -2/-2 -1/-1\nf 1 2 3\n")
    obj = read_obj(p)
    assert obj.polygons[0] == ([0, 1, 2], [0, 1, 2]) and obj.polygons[1] == ([0, 1, 2], [])


@needs_real
def test_real_cropped_model_renders_without_holes():
    import torch
    from scipy.ndimage import binary_fill_holes

    from headgen.cameras import Cameras
    from headgen.geometry.mesh import Mesh
    from headgen.render.mesh_renderer import MeshRenderer

    head = load_ict_facekit(REAL)
    mesh = Mesh(head.v_template, head.faces, head.uvs, head.uv_faces)
    n = 3
    cams = Cameras.from_spherical(torch.zeros(n), torch.tensor([0.0, 40.0, -40.0]), torch.full((n,), 3.0),
                                  torch.full((n,), 30.0), 128)
    with torch.no_grad():
        out = MeshRenderer(MeshRenderer.Config(resolution=128, antialias=False)).render(mesh, cams, None,
                                                                                        modes=("opacity", "shading"))
    for i in range(n):
        covered = out["opacity"][i, ..., 0].numpy() > 0.5
        assert covered.sum() > 2000
        holes = binary_fill_holes(covered) & ~covered
        assert holes.sum() == 0, f"view {i}: {holes.sum()} pixels of holes"
