"""HeadArtist edits "with different text and landmarks": the landmark map posed by blendshapes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from headgen.cameras import Cameras
from headgen.config import parse
from headgen.config.compose import compose
from headgen.config.recipe import validate
from headgen.errors import ConfigError
from headgen.heads.builtin import BuiltinHead
from headgen.inputs.base import StepState
from headgen.inputs.landmark_map import LandmarkMapConfig, LandmarkMapProvider
from headgen.render.landmarks import project_to_pixels

RES = 256
CHIN, UPPER_LIP, LOWER_LIP = 152, 13, 14  # MediaPipe ids


@pytest.fixture(scope="module")
def head():
    return BuiltinHead(parse(BuiltinHead.Config, {})).load()


def provider(head, **options) -> LandmarkMapProvider:
    ctx = SimpleNamespace(head=head, config=SimpleNamespace(head=object()))
    return LandmarkMapProvider(parse(LandmarkMapConfig, options), ctx, "geometry")


def step_state() -> StepState:
    az = torch.zeros(1)
    cams = Cameras.from_spherical(az, az, torch.full_like(az, 3.0), torch.full_like(az, 40.0), RES)
    rep = SimpleNamespace(head_identity=lambda: None)
    return StepState(
        stage="geometry", step=0, representation=rep, renderer=None,
        views=SimpleNamespace(cameras=cams), render={"normal": torch.zeros(1, RES, RES, 3)},
        device=torch.device("cpu"),
    )


def test_open_jaw_moves_the_chin_and_lower_lip_down_in_the_map(head):
    neutral = provider(head)(step_state())
    posed = provider(head, expression={"jawOpen": 1.0})(step_state())
    assert posed.shape == neutral.shape == (1, RES, RES, 3)
    changed = (posed - neutral).abs().sum(-1) > 0
    assert changed.float().mean() > 0.002, "the posed map should differ from the neutral one"

    cams = step_state().views.cameras
    open_pts = head.landmarks_mediapipe(head.vertices(None, {"jawOpen": 1.0}))
    neutral_px = project_to_pixels(head.landmarks_mediapipe(), cams)[0][0]
    open_px = project_to_pixels(open_pts, cams)[0][0]
    # Image y grows downwards: an open jaw moves the chin and lower lip down, the upper lip less.
    chin_drop = float(open_px[CHIN, 1] - neutral_px[CHIN, 1])
    def gap(px):
        return float(px[LOWER_LIP, 1] - px[UPPER_LIP, 1])

    lip_gap = gap(open_px) - gap(neutral_px)
    assert chin_drop > 2.0, chin_drop
    assert lip_gap > 2.0, lip_gap
    # The changed pixels lie in the lower half of the face (the jaw), not around the eyes.
    rows = changed[0].nonzero()[:, 0].float()
    assert rows.mean() > float(neutral_px[UPPER_LIP, 1]) - 10


def test_a_smile_is_symmetric_and_differs_from_neutral(head):
    smile = provider(head, expression={"mouthSmile_L": 1.0, "mouthSmile_R": 1.0})(step_state())
    neutral = provider(head)(step_state())
    diff = (smile - neutral).abs().sum(-1)[0]
    assert diff.sum() > 0
    # Both mouth corners move: the change is spread over both halves of the image.
    left, right = diff[:, : RES // 2].sum(), diff[:, RES // 2 :].sum()
    assert min(left, right) / max(left, right) > 0.5


def test_unknown_expression_name_is_a_config_error_listing_the_names(head):
    with pytest.raises(ConfigError) as err:
        provider(head, expression={"jawOpn": 1.0})
    msg = str(err.value)
    assert "stages.geometry.inputs.landmark_map.expression" in msg
    assert "jawOpn" in msg and "jawOpen" in msg


def test_expression_needs_the_head_source(head):
    with pytest.raises(ConfigError, match="source: head"):
        provider(head, source="representation", expression={"jawOpen": 1.0})


def test_headartist_edit_passes_one_expression_to_both_stages():
    expr = "stages.geometry.inputs.landmark_map.expression={mouthSmile_L: 0.8, mouthSmile_R: 0.8}"
    cfg = validate(compose("methods/headartist-edit.yaml", ["source=/some/run", "prompt=x", expr]))
    for stage in ("geometry", "texture"):
        inputs = cfg.stages[stage].config.inputs
        assert inputs["landmark_map"].config.expression == {"mouthSmile_L": 0.8, "mouthSmile_R": 0.8}, stage
    default = validate(compose("methods/headartist-edit.yaml", ["source=/some/run", "prompt=x"]))
    assert default.stages["texture"].config.inputs["landmark_map"].config.expression == {}
