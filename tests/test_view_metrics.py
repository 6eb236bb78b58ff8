"""View-consistency figures (issue 16): the Haar face detector around a turntable, and the demo
prior's PSNR per azimuth sector."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "plugins"))
from runhelpers import launch_demo  # noqa: E402

from headgen.bench import views  # noqa: E402


def test_turntable_protocol():
    az = views.turntable_azimuths()
    assert len(az) == 24 and float(az[0]) == 0.0 and float(az[12]) == 180.0 and float(az[13]) == -165.0
    cams = views.turntable_cameras()
    assert cams.height == 256 and torch.all(cams.elevation == 0)


def test_no_face_on_a_blank_frame():
    assert views.face_counts(torch.ones(2, 256, 256, 3)) == [0, 0]


def test_janus_counts_back_frames_with_a_face(monkeypatch):
    monkeypatch.setattr(views, "turntable", lambda surface, size, device: torch.zeros(24, 4, 4, 3))
    # a face in every frame: 9 frames have |azimuth| >= 120 (120 .. 180 .. -120)
    monkeypatch.setattr(views, "face_counts", lambda images: [1] * 24)
    assert views.janus_scores(object()) == {"janus_faces": 9.0, "front_face": 1.0}
    monkeypatch.setattr(views, "face_counts", lambda images: [0] * 8 + [2] + [0] * 15)  # only 120 degrees
    assert views.janus_scores(object()) == {"janus_faces": 1.0, "front_face": 0.0}


def test_a_demo_run_records_view_scores(tmp_path):
    run = launch_demo("tests/recipes/demo_texture_fit.yaml", tmp_path, "stages.texture.steps=2")
    metrics = json.loads((run / "summary.json").read_text())["metrics"]
    for key in ("janus_faces", "front_face", "psnr_front", "psnr_side", "psnr_back", "demo_cells_touched"):
        assert f"views/{key}" in metrics, key
    assert metrics["views/janus_faces"] in range(10)
    # the texture starts grey on the target's geometry: far from the target, everywhere
    assert 5.0 < metrics["views/psnr_front"] < 40.0
    # ambiguous views (the default): the text branch's other azimuths and the bank come from cached
    # cells; 2 steps of 2 cameras, each cell at most once in the count (measured: 70 cells)
    assert 24 <= metrics["views/demo_cells_touched"] <= 2 * 2 * 24, metrics
    assert metrics["views/demo_cell_renders"] >= metrics["views/demo_cells_touched"]  # each rendered at least once
    exact = launch_demo("tests/recipes/demo_texture_fit.yaml", tmp_path / "exact", "stages.texture.steps=2",
                        "demo.views=exact")
    assert json.loads((exact / "summary.json").read_text())["metrics"]["views/demo_cells_touched"] == 0


@pytest.mark.parametrize("other", ["a young woman with red hair"])
def test_sector_psnr_is_high_for_the_target_itself(other):
    from headgen.config import parse
    from headgen.config.demo import DemoSettings
    from headgen.heads.builtin import BuiltinHead
    from headgen.prior.demo.world import DemoWorld

    head = BuiltinHead(parse(BuiltinHead.Config, {})).load()
    world = DemoWorld(head, "an old sailor with a grey beard", settings=DemoSettings(bank_size=0))
    mine = world.target.surface(head, torch.device("cpu"))
    theirs = world.target_for(other).surface(head, torch.device("cpu"))
    same = views.sector_psnr(mine, mine)
    diff = views.sector_psnr(theirs, mine)
    assert set(same) == {"psnr_front", "psnr_side", "psnr_back"}
    for k in same:
        assert same[k] > 60 and diff[k] < 35, (k, same[k], diff[k])


def test_an_opencv_without_haar_cascades_is_named(monkeypatch):
    """OpenCV 5 (found on a GPU machine) has no CascadeClassifier: say which OpenCV and what to install."""
    import types

    from headgen.errors import HeadgenError

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.0.0"))
    with pytest.raises(HeadgenError, match=r"OpenCV \(5.0.0\) lacks.*opencv-contrib-python<5"):
        views.face_counts(torch.ones(1, 8, 8, 3))


def test_a_run_without_the_detector_keeps_its_head_and_says_so(tmp_path, monkeypatch):
    """The finished stage and the sector PSNRs are kept; summary.json names why the faces are missing."""
    from headgen.errors import HeadgenError

    def no_detector(images):
        raise HeadgenError("no cascades here")

    monkeypatch.setattr(views, "face_counts", no_detector)
    run = launch_demo("tests/recipes/demo_texture_fit.yaml", tmp_path, "stages.texture.steps=2")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] is True
    assert summary["metrics"]["views/face_detector"] == "unavailable: no cascades here"
    assert "views/janus_faces" not in summary["metrics"] and "views/psnr_front" in summary["metrics"]
