"""The ICT-FaceKit copy shipped with headgen: contents, parts, skin atlas and the packing script."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headgen.errors import HeadgenError
from headgen.heads.ict import (
    ATLAS_TILES,
    CARVED_VERTICES,
    GEOMETRY_RANGES,
    SKIN_VERTICES,
    IctFaceKitHead,
    load_ict_facekit,
)
from headgen.heads.ict_files import PACKED_DIR, PACKED_FILE, read_packed, read_source

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT.parent / "shared" / "data" / "ict-facekit-full"
needs_full = pytest.mark.skipif(not (FULL / "ict_facekit.npz").is_file(), reason=f"{FULL} not found")


@pytest.fixture(scope="module")
def head():
    return load_ict_facekit()


@pytest.fixture(scope="module")
def raw():
    return load_ict_facekit(parts="merged", normalize=False)


def test_shipped_file_is_compact_and_licensed():
    assert PACKED_FILE.is_file() and PACKED_FILE.stat().st_size < 40 * 2**20
    assert "MIT" in (PACKED_DIR / "LICENSE").read_text()
    assert "ICT" in (PACKED_DIR / "CREDITS.md").read_text()


def test_shipped_model_has_100_identities_and_the_expressions(head):
    assert head.num_identity == 100 and head.num_expression >= 53 and head.num_vertices == 26719
    assert {"jawOpen", "eyeBlink_L", "mouthSmile_R", "eyeLookUp_L", "cheekPuff_L"} <= set(head.expression_names)
    assert head.scale == pytest.approx(1.0) and head.units == "head height" and head.num_landmarks > 68
    # registered under ict-facekit with no path needed
    assert IctFaceKitHead(IctFaceKitHead.Config()).load().num_identity == 100


@needs_full
def test_identity_k_reproduces_the_published_mesh(raw):
    z = np.load(FULL / "ict_facekit.npz")
    height = raw.scale  # chin to crown, centimetres
    assert 20 < height < 25
    for k in (0, 37, 99):
        beta = np.zeros(100, dtype=np.float32)
        beta[k] = 1.0
        err = np.abs(raw.vertices(beta) - (z["neutral"] + z["identity_deltas"][k])).max() / height
        assert err < 1e-4, (k, err)
    e = list(z["expression_names"]).index("jawOpen")
    jaw = raw.vertices(None, raw.expression_vector({"jawOpen": 1.0}).numpy())
    err = np.abs(jaw - (z["neutral"] + z["expression_deltas"][e])).max() / height
    assert err < 1e-4


def test_parts_materials_and_carving(head):
    names = [p.name for p in head.parts]
    assert names == ["gums_tongue", "teeth", "cornea_left", "eyeball_left", "cornea_right", "eyeball_right",
                     "lacrimal_fluid", "eye_blend", "eye_occlusion", "eyelashes"]
    drawn = {p.name for p in head.parts if p.drawn}
    assert drawn == {"gums_tongue", "teeth", "eyeball_left", "eyeball_right"}
    ranges = {"teeth": "teeth", "gums_tongue": "gums_tongue", "eyeball_left": "eyeball_left",
              "eyelashes": "eyelashes", "eye_occlusion": "eye_occlusion"}
    for part in head.parts:
        if part.name in ranges:
            a, b = GEOMETRY_RANGES[ranges[part.name]]
            assert a <= int(part.faces.min()) and int(part.faces.max()) < b, part.name
    # the skin is face, head, neck and sockets; only face, head and neck are carved
    assert int(head.faces.max()) == SKIN_VERTICES - 1
    assert head.carved.sum() == CARVED_VERTICES and bool(head.carved[:CARVED_VERTICES].all())
    # eyeballs: sclera, iris and pupil colours, the iris facing forward
    eye = next(p for p in head.parts if p.name == "eyeball_left")
    index, _ = head.part_vertices(eye)
    colors, pos = eye.vertex_colors, head.v_template[index]
    iris = (colors - torch.tensor([0.30, 0.19, 0.11])).abs().sum(-1) < 1e-6
    sclera = (colors - torch.tensor([0.90, 0.88, 0.85])).abs().sum(-1) < 1e-6
    assert iris.sum() > 30 and sclera.sum() > 100
    assert pos[iris, 2].mean() > pos[sclera, 2].mean()  # the iris is at the front of the ball


def test_expressions_move_the_parts(head):
    teeth = next(p for p in head.parts if p.name == "teeth")
    index, _ = head.part_vertices(teeth)
    jaw = head.vertices(None, head.expression_vector({"jawOpen": 1.0}).numpy()) - head.v_template.numpy()
    moved = np.linalg.norm(jaw[index.numpy()], axis=1)
    assert (moved > 0.01).mean() > 0.3 and (moved < 1e-6).mean() > 0.3  # lower teeth drop, upper stay
    eye = next(p for p in head.parts if p.name == "eyeball_left")
    pupil = head.vertices(None, head.expression_vector({"PupilDilate_L": 1.0}).numpy()) - head.v_template.numpy()
    assert np.linalg.norm(pupil[head.part_vertices(eye)[0].numpy()], axis=1).max() > 0.005


def test_skin_atlas_layout(head):
    uv = head.uvs
    assert float(uv.min()) >= 0 and float(uv.max()) <= 1
    face_uv = head.uv_faces[torch.as_tensor(head.meta["face_material"]) == head.meta["materials"].index("M_Face")]
    pts = uv[face_uv.reshape(-1)]
    scale, du, dv = ATLAS_TILES[0]
    assert float(pts[:, 0].max()) <= du + scale and float(pts[:, 1].min()) >= dv  # the top-left square
    # nothing in the bottom strip or under the back tile: the unused part of the atlas
    assert not ((uv[:, 1] < 0.25) | ((uv[:, 0] > 0.75) & (uv[:, 1] < 0.75))).any()


def test_skin_only_and_merged_layouts(head):
    skin = load_ict_facekit(parts="none", num_identity=3)
    assert skin.num_vertices == SKIN_VERTICES and not skin.parts and skin.num_identity == 3
    assert torch.equal(skin.faces, head.faces) and torch.allclose(skin.uvs, head.uvs)
    merged = load_ict_facekit(parts="merged", num_identity=0)
    assert merged.num_faces == head.num_faces + sum(p.faces.shape[0] for p in head.parts)
    assert float(merged.uvs[:, 0].max()) > 6  # the published UDIM tiles
    with pytest.raises(HeadgenError, match="parts must be attached, none or merged"):
        load_ict_facekit(parts="all")
    with pytest.raises(HeadgenError, match="num_identity=101 but .* has 100 identity modes"):
        load_ict_facekit(num_identity=101)


def test_head_model_with_parts_round_trips_through_npz(head, tmp_path):
    small = head.truncated(num_identity=2, num_expression=3)
    back = type(head).load_npz(small.save_npz(tmp_path / "ict.npz"))
    assert [p.name for p in back.parts] == [p.name for p in small.parts]
    for a, b in zip(back.parts, small.parts):
        assert torch.equal(a.faces, b.faces) and a.alpha == pytest.approx(b.alpha) and a.color == pytest.approx(b.color)
        assert (a.vertex_colors is None) == (b.vertex_colors is None)
    assert torch.equal(back.carved, small.carved)


# ------------------------------------------------------------------------------------ packing script
def _tiny_source(folder: Path) -> None:
    """A 5-vertex ICT-like source folder in the shared packed form."""
    folder.mkdir()
    obj = ("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 2 0 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvt 1.5 0.5\n"
           "usemtl M_Face\nf 1/1 2/2 3/3 4/4\nusemtl M_BackHead\nf 2/2 5/5 3/3\n")
    (folder / "generic_neutral_mesh.obj.gz").write_bytes(gzip.compress(obj.encode()))
    neutral = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], dtype=np.float32)
    np.savez(folder / "ict_facekit.npz", neutral=neutral, identity_names=np.array(["identity000", "identity001"]),
             identity_deltas=np.stack([0.1 * np.ones_like(neutral), -0.2 * np.ones_like(neutral)]),
             expression_names=np.array(["jawOpen"]), expression_deltas=0.3 * np.ones((1, 5, 3), np.float32))
    (folder / "vertex_indices.json").write_text(json.dumps({"expressions": ["jawOpen"]}))
    (folder / "LICENSE").write_text("MIT License\n")
    (folder / "CREDITS.md").write_text("ICT-FaceKit\n")


def test_pack_script_round_trip_and_errors(tmp_path):
    src = tmp_path / "src"
    _tiny_source(src)
    out = tmp_path / "out"
    script = ROOT / "scripts" / "pack_ict_facekit.py"
    run = subprocess.run([sys.executable, str(script), str(src), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "float16 error" in run.stdout and (out / "LICENSE").is_file() and (out / "CREDITS.md").is_file()
    packed = read_packed(out / "ict_facekit.npz")
    assert packed.obj.polygons == [([0, 1, 2, 3], [0, 1, 2, 3]), ([1, 4, 2], [1, 4, 2])]
    assert packed.obj.materials == ["M_Face", "M_BackHead"]
    assert np.allclose(packed.identity[1], -0.2, atol=1e-3) and packed.expression_names == ["jawOpen"]
    # the folder form and the file form read the same
    assert read_source(out).identity.shape == read_source(out / "ict_facekit.npz").identity.shape == (2, 5, 3)
    model = load_ict_facekit(out / "ict_facekit.npz", parts="merged", normalize=False)
    assert model.num_faces == 3 and model.num_identity == 2
    # errors: a source lacking files, a corrupt packed file
    (src / "LICENSE").unlink()
    bad = subprocess.run([sys.executable, str(script), str(src), "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "lacks LICENSE" in bad.stderr
    broken = tmp_path / "broken.npz"
    shutil.copyfile(out / "ict_facekit.npz", broken)
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(HeadgenError, match="not a packed ICT-FaceKit file"):
        read_packed(broken)


def test_mediapipe_contours_transferred_from_the_builtin_head(head):
    from headgen.render.landmarks import contour_landmark_ids, landmark_edges

    ids = set(head.landmark_ids.tolist())
    assert set(contour_landmark_ids()) <= ids and head.num_landmarks >= 140
    assert not {468, 473} & ids  # the pupils are on the eyeballs, not the skin
    lm = head.landmarks_mediapipe()
    for eye, ball in (("left_eye", "eyeball_left"), ("right_eye", "eyeball_right")):
        contour = sorted({i for e in landmark_edges()[eye] for i in e})
        part = next(p for p in head.parts if p.name == ball)
        centre = head.v_template[head.part_vertices(part)[0]].mean(0)
        # the transferred eye outline surrounds the eyeball in the front view
        assert (lm[contour, :2].mean(0) - centre[:2]).abs().max() < 0.02, eye
