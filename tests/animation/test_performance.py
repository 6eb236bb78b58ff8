"""Live Link Face performances, the ARKit mapping, clips, and head.glb's animation (issue 22)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pygltflib
import pytest
import torch
from gltf_validator import validate_glb
from takes import jaw_then_smile
from threejs_player import play_glb

from headgen.animation.arkit import ARKIT_SHAPES, mapping, undriven
from headgen.animation.clip import keyframe_clip, performance_clip, yaw_pitch_roll_quaternions
from headgen.animation.livelink import read_live_link_csv, write_live_link_csv
from headgen.config import build, parse
from headgen.errors import HeadgenError
from headgen.export.gltf import GlbExporter
from representations.parametric_mesh import ParametricMesh, ParametricMeshConfig


def test_ict_mapping_drives_51_of_52_arkit_shapes():
    from headgen.heads import load_ict_facekit

    names = load_ict_facekit().expression_names
    table = mapping(names)
    assert len(table) == len(ARKIT_SHAPES) == 52
    assert [a for a, t in table.items() if not t] == ["tongueOut"]
    assert table["eyeBlinkLeft"] == ["eyeBlink_L"] and table["jawOpen"] == ["jawOpen"]
    assert table["cheekPuff"] == ["cheekPuff_L", "cheekPuff_R"]
    assert table["browInnerUp"] == ["browInnerUp_L", "browInnerUp_R"]
    assert sorted(undriven(names)) == ["PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R"]


def test_reads_a_take_with_its_rate_and_rotation(tmp_path):
    rot = np.zeros((60, 3))
    rot[:, 0] = np.linspace(0.0, 0.3, 60)
    path = write_live_link_csv(tmp_path / "take.csv", jaw_then_smile(), fps=30, head_rotation=rot,
                               start="10:00:00:15")
    perf = read_live_link_csv(path)
    assert perf.fps == 30 and len(perf.times) == 60
    assert perf.duration == pytest.approx(59 / 30)
    assert np.diff(perf.times) == pytest.approx(np.full(59, 1 / 30))
    assert perf.shapes["jawOpen"].max() == pytest.approx(1.0, abs=1e-3) and len(perf.shapes) == 52
    assert perf.head_rotation[-1, 0] == pytest.approx(0.3)
    # 25 fps timecode: read off the frame numbers
    assert read_live_link_csv(write_live_link_csv(tmp_path / "pal.csv", jaw_then_smile(25), fps=25)).fps == 25


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:2], "1 frame row"),
    (lambda rows: [rows[0].replace("Timecode", "Time")] + rows[1:], "first columns"),
    (lambda rows: [rows[0].replace("JawOpen", "JawOpened")] + rows[1:], "unknown column.*JawOpened"),
    (lambda rows: [rows[0].replace(",TongueOut", "")] + [r.rsplit(",", 10)[0] + "," + ",".join(r.rsplit(",", 10)[2:])
                                                          for r in rows[1:]], "missing ARKit column.*tongueOut"),
    (lambda rows: rows[:5] + [rows[5].replace("0.", "x.", 1)] + rows[6:], "row 6: could not convert"),
    (lambda rows: rows[:5] + [rows[5].split(",", 1)[0] + ",61,1"] + rows[6:], "row 6 has 3 fields"),
    (lambda rows: rows[:3] + [rows[2]] + rows[3:], "does not increase at row 4"),
    (lambda rows: [rows[0], "12:00:00:99,61" + rows[1][rows[1].index(",61") + 3:]] + rows[2:], "does not increase"),
])
def test_a_bad_take_is_one_clear_error(tmp_path, edit, message):
    rows = write_live_link_csv(tmp_path / "ok.csv", jaw_then_smile()).read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(edit(rows)) + "\n")
    with pytest.raises(HeadgenError, match=message):
        read_live_link_csv(bad)


def test_a_short_take_needs_its_rate(tmp_path):
    path = write_live_link_csv(tmp_path / "short.csv", {k: v[:10] for k, v in jaw_then_smile().items()})
    with pytest.raises(HeadgenError, match="shorter than a second"):
        read_live_link_csv(path)
    assert read_live_link_csv(path, fps=30).duration == pytest.approx(9 / 30)
    with pytest.raises(HeadgenError, match="no such file"):
        read_live_link_csv(tmp_path / "missing.csv")


def test_quaternions_match_scipy():
    from scipy.spatial.transform import Rotation

    ypr = np.array([[0.3, -0.2, 0.1], [0.0, 0.5, 0.0], [-1.0, 0.2, 0.7]])
    q = yaw_pitch_roll_quaternions(ypr)
    expected = Rotation.from_euler("YXZ", ypr).as_quat()  # intrinsic Y, then X, then Z
    assert np.allclose(np.abs((q * expected).sum(1)), 1.0, atol=1e-9)


@pytest.fixture(scope="module")
def rep():
    head = build("head", {"type": "ict-facekit"}).load()
    ctx = SimpleNamespace(head=head, device=torch.device("cpu"))
    return ParametricMesh(parse(ParametricMeshConfig, {"num_identity": 4, "normal_map_size": 16,
                                                       "texture_size": 16}), ctx)


def _floats(doc: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = doc.accessors[index]
    view = doc.bufferViews[acc.bufferView]
    data = doc.binary_blob()[view.byteOffset + (acc.byteOffset or 0):]
    comps = {"SCALAR": 1, "VEC4": 4}[acc.type]
    return np.frombuffer(data, dtype=np.float32, count=acc.count * comps).reshape(acc.count, comps)


def test_glb_plays_the_take_and_the_default_clip(rep, tmp_path):
    rot = np.zeros((60, 3))
    rot[:, 0] = np.linspace(0.0, 0.4, 60)
    take = write_live_link_csv(tmp_path / "take.csv", jaw_then_smile(), head_rotation=rot)
    logs: list[str] = []
    ctx = SimpleNamespace(device=torch.device("cpu"), log=logs.append)
    out = GlbExporter(GlbExporter.Config(animation=str(take), filename="take.glb")).export(rep, ctx, tmp_path)
    assert logs == [f"performance {take}: no head expression for tongueOut; those columns are skipped (the mapping: "
                    "python -m headgen.animation.arkit)"]
    doc = pygltflib.GLTF2().load(out["glb"])
    (anim,) = doc.animations
    assert anim.name == "take"
    times = _floats(doc, anim.samplers[0].input)[:, 0]
    assert len(times) == 60 and times[-1] == pytest.approx(59 / 30, abs=1e-5)
    names = doc.meshes[0].extras["targetNames"]
    weights = _floats(doc, anim.samplers[0].output).reshape(60, len(names))
    assert weights[15, names.index("jawOpen")] == pytest.approx(np.sin(np.pi * 0.5), abs=1e-5)
    assert weights[45, names.index("mouthSmile_R")] == pytest.approx(1.0, abs=1e-5)
    morphing = {doc.nodes[c.target.node].name for c in anim.channels if c.target.path == "weights"}
    assert morphing == {m.name for m in doc.meshes if m.weights}  # the head and every part with targets
    assert {"head", "teeth", "eyeball_left"} <= morphing
    (turn,) = [c for c in anim.channels if c.target.path == "rotation"]
    root = doc.nodes[turn.target.node]
    assert root.name == "root" and doc.scenes[0].nodes == [turn.target.node]
    assert sorted(root.children) == list(range(len(doc.meshes)))
    q = _floats(doc, anim.samplers[turn.sampler].output)
    assert q[-1] == pytest.approx([0.0, np.sin(0.2), 0.0, np.cos(0.2)], abs=1e-5)  # yaw 0.4 about +Y
    report = validate_glb(Path(out["glb"]))
    if report is not None:
        assert report["errors"] == 0, report["messages"][:5]
    played = play_glb(Path(out["glb"]), [0.5, 1.5, 59 / 30])  # None: no node here
    if played is not None:  # three.js's AnimationMixer plays the take
        assert played["clip"] == "take" and played["duration"] == pytest.approx(59 / 30, abs=1e-5)
        (jaw, smile, end) = played["frames"]
        head, teeth = jaw["meshes"]["head"], jaw["meshes"]["teeth"]
        assert head["w"][head["dict"]["jawOpen"]] == pytest.approx(1.0, abs=1e-3)
        assert teeth["w"][teeth["dict"]["jawOpen"]] == pytest.approx(1.0, abs=1e-3)
        head = smile["meshes"]["head"]
        assert head["w"][head["dict"]["mouthSmile_L"]] == pytest.approx(1.0, abs=1e-3)
        assert head["w"][head["dict"]["jawOpen"]] == pytest.approx(0.0, abs=1e-6)
        assert end["root"] == pytest.approx([0.0, np.sin(0.2), 0.0, np.cos(0.2)], abs=1e-5)

    default = GlbExporter(GlbExporter.Config()).export(rep, ctx, tmp_path)
    doc = pygltflib.GLTF2().load(default["glb"])
    (anim,) = doc.animations
    times = _floats(doc, anim.samplers[0].input)[:, 0]
    assert times[-1] == pytest.approx(4.0) and len(times) == 121
    names = doc.meshes[0].extras["targetNames"]
    w = _floats(doc, anim.samplers[0].output).reshape(len(times), len(names))
    assert w[:, names.index("jawOpen")].max() == pytest.approx(0.6, abs=1e-6)
    assert w[:, names.index("browInnerUp_L")].max() == pytest.approx(0.9, abs=1e-6)  # ARKit browInnerUp, split
    assert not any(c.target.path == "rotation" for c in anim.channels) and doc.scenes[0].nodes == list(
        range(len(doc.nodes)))
    assert not GlbExporter(GlbExporter.Config(animation="none", filename="still.glb")).export(
        rep, ctx, tmp_path) or not pygltflib.GLTF2().load(str(tmp_path / "still.glb")).animations


def test_clip_sampling_and_config_errors(tmp_path):
    clip = keyframe_clip([{}, {"jawOpen": 1.0}, {}], ["jawOpen", "x"], seconds=2.0, fps=10)
    assert len(clip.times) == 21 and clip.weights[10, 0] == pytest.approx(1.0)
    assert clip.sample(5).shape == (11, 2)
    with pytest.raises(HeadgenError, match="no such file"):
        GlbExporter.Config(animation=str(tmp_path / "nope.csv"))
    with pytest.raises(HeadgenError, match="clip_seconds must be > 0"):
        GlbExporter.Config(clip_seconds=0)
    perf = read_live_link_csv(write_live_link_csv(tmp_path / "t.csv", {"TongueOut": np.ones(40)}))
    with pytest.raises(HeadgenError, match="none of its ARKit shapes maps"):
        performance_clip(perf, ["foo"])


def test_animate_command_line_errors(tmp_path, capsys):
    from headgen.cli import main

    take = write_live_link_csv(tmp_path / "take.csv", jaw_then_smile())
    cases = [
        (["--animate", str(tmp_path)], "--animate RUN_DIR needs --performance TAKE.csv"),
        (["--performance", str(take), "--export", str(tmp_path)], "--performance and --timecode-fps go with --animate"),
        (["--animate", str(tmp_path / "nope"), "--performance", str(take)], "no such run directory"),
        (["--animate", str(tmp_path), "--performance", str(tmp_path / "missing.csv")], "missing.csv: no such file"),
        (["--animate", str(tmp_path), "--performance", str(take), "seed=1"], "--animate takes no overrides"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
