import math

import pytest
import torch

from headgen.cameras import Cameras
from headgen.errors import HeadgenError
from headgen.render.landmarks import (
    LANDMARK_GROUPS,
    LANDMARK_STYLE,
    NUM_LANDMARKS,
    PUPIL_IDS,
    contour_landmark_ids,
    landmark_edges,
    project_to_pixels,
    render_landmark_map,
)

RES = 128
PLANE_Z = 0.5
# Each group on its own circle (centre x, centre y, radius) on the plane z = PLANE_Z, so groups
# never overlap; +x is the subject's left and appears on the right of a front view.
LAYOUT = {
    "face_oval": (0.0, 0.0, 0.8),
    "left_eye": (0.35, 0.2, 0.12),
    "left_eyebrow": (0.35, 0.45, 0.08),
    "right_eye": (-0.35, 0.2, 0.12),
    "right_eyebrow": (-0.35, 0.45, 0.08),
    "lips": (0.0, -0.4, 0.15),
}


def cams(azimuth=(0.0,), elevation=None, res=RES):
    az = torch.tensor(azimuth)
    el = torch.zeros_like(az) if elevation is None else torch.tensor(elevation)
    return Cameras.from_spherical(el, az, torch.full_like(az, 3.0), torch.full_like(az, 40.0), res)


def synthetic_landmarks() -> torch.Tensor:
    pts = torch.full((NUM_LANDMARKS, 3), float("nan"))
    for group, (cx, cy, r) in LAYOUT.items():
        ids = list(dict.fromkeys(i for e in landmark_edges()[group] for i in e))
        for k, idx in enumerate(ids):
            a = 2 * math.pi * k / len(ids)
            pts[idx] = torch.tensor([cx + r * math.cos(a), cy + r * math.sin(a), PLANE_Z])
    pts[PUPIL_IDS["right_pupil"]] = torch.tensor([-0.35, 0.2, PLANE_Z])
    pts[PUPIL_IDS["left_pupil"]] = torch.tensor([0.35, 0.2, PLANE_Z])
    return pts


def color_mask(img: torch.Tensor, name: str) -> torch.Tensor:
    c = torch.tensor(LANDMARK_STYLE[name], dtype=torch.float32) / 255.0
    return (img - c).abs().amax(-1) < 1e-6


def colors_in(img: torch.Tensor) -> set[tuple[int, int, int]]:
    return {tuple(int(round(v * 255)) for v in c) for c in img.reshape(-1, 3).unique(dim=0).tolist()}


def test_edges_come_from_mediapipe_with_expected_counts():
    edges = landmark_edges()
    counts = {g: len(edges[g]) for g in LANDMARK_GROUPS}
    assert counts == {
        "face_oval": 36,
        "lips": 40,
        "left_eye": 16,
        "left_eyebrow": 8,
        "right_eye": 16,
        "right_eyebrow": 8,
    }
    ids = contour_landmark_ids()
    assert len(ids) == 128 and ids == sorted(ids) and max(ids) < 468
    assert (10, 338) in edges["face_oval"]  # the oval starts at the forehead landmark 10


def test_front_view_shape_range_and_exact_colours():
    img = render_landmark_map(synthetic_landmarks(), cams())
    assert img.shape == (1, RES, RES, 3) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1
    allowed = set(LANDMARK_STYLE.values()) | {(0, 0, 0)}
    found = colors_in(img)
    assert found <= allowed, found - allowed
    assert found == allowed  # every group and both pupils are drawn


def test_groups_land_where_placed():
    img = render_landmark_map(synthetic_landmarks(), cams())[0]
    cols = torch.arange(RES)
    for group in ("left_eye", "right_eye"):
        mask = color_mask(img, group)
        mean_col = (mask.sum(0) * cols).sum() / mask.sum()
        # Subject's left (+x) is on the image right in a front view.
        assert (mean_col > RES / 2) == (group == "left_eye")
    lips_rows = color_mask(img, "lips").nonzero()[:, 0].float().mean()
    brow_rows = color_mask(img, "left_eyebrow").nonzero()[:, 0].float().mean()
    assert brow_rows < RES / 2 < lips_rows  # row 0 is the top


def test_pupils_are_4x4_squares_at_the_projected_point():
    pts = synthetic_landmarks()
    camera = cams()
    img = render_landmark_map(pts, camera)[0]
    pix, valid = project_to_pixels(pts[None], camera)
    for name, idx in PUPIL_IDS.items():
        mask = color_mask(img, name)
        assert int(mask.sum()) == 16
        rows, cols = mask.nonzero().unbind(1)
        x, y = pix[0, idx].tolist()
        assert valid[0, idx]
        assert rows.min() == y - 2 and rows.max() == y + 1
        assert cols.min() == x - 2 and cols.max() == x + 1


def test_horizontal_line_thickness_matches_cv2_thickness_2():
    pts = torch.full((NUM_LANDMARKS, 3), float("nan"))
    s, e = landmark_edges()["face_oval"][0]
    pts[s] = torch.tensor([-0.5, 0.1, PLANE_Z])
    pts[e] = torch.tensor([0.5, 0.1, PLANE_Z])
    img = render_landmark_map(pts, cams())[0]
    mask = color_mask(img, "face_oval")
    pix, _ = project_to_pixels(pts[None], cams())
    y = int(pix[0, s, 1])
    assert int(pix[0, e, 1]) == y
    # OpenCV thickness 2 (the annotator's setting) covers rows y-1..y+1 of an axis-aligned line.
    column = mask[:, RES // 2]
    assert column.nonzero().flatten().tolist() == [y - 1, y, y + 1]
    assert set(colors_in(img)) == {(0, 0, 0), LANDMARK_STYLE["face_oval"]}


def test_back_view_draws_only_the_oval_or_nothing():
    pts = synthetic_landmarks()
    camera = cams((180.0, 100.0))
    img = render_landmark_map(pts, camera, back_view="oval", back_threshold=90.0)
    assert colors_in(img[0]) == {(0, 0, 0), LANDMARK_STYLE["face_oval"]}
    assert colors_in(img[1]) == {(0, 0, 0), LANDMARK_STYLE["face_oval"]}
    assert color_mask(img[0], "face_oval").sum() > 100
    empty = render_landmark_map(pts, camera, back_view="none")
    assert empty.abs().sum() == 0
    # With a larger threshold the azimuth-100 camera is not a back view: all groups are drawn.
    side = render_landmark_map(pts, cams((100.0,)), back_threshold=135.0, occlusion="none")
    assert len(colors_in(side)) > 2


def test_points_facing_away_are_not_drawn():
    pts = synthetic_landmarks()
    ids = list({i for e in landmark_edges()["right_eye"] for i in e})
    pts[ids, 2] = -0.6  # behind the head centre: facing away from a front camera
    pts[PUPIL_IDS["right_pupil"], 2] = -0.6
    img = render_landmark_map(pts, cams())[0]
    assert color_mask(img, "right_eye").sum() == 0
    assert color_mask(img, "right_pupil").sum() == 0
    assert color_mask(img, "left_eye").sum() > 0
    drawn = render_landmark_map(pts, cams(), occlusion="none")[0]
    assert color_mask(drawn, "right_eye").sum() > 0
    # Explicit normals override the centre rule: pointing at the camera keeps the eye.
    normals = torch.zeros(NUM_LANDMARKS, 3)
    normals[:, 2] = 1.0
    kept = render_landmark_map(pts, cams(), normals=normals)[0]
    assert color_mask(kept, "right_eye").sum() > 0


def test_batch_broadcast_nan_and_errors():
    pts = synthetic_landmarks()
    img = render_landmark_map(pts, cams((0.0, 30.0)))
    assert img.shape == (2, RES, RES, 3)
    assert not torch.equal(img[0], img[1])
    blank = render_landmark_map(torch.full((NUM_LANDMARKS, 3), float("nan")), cams())
    assert blank.abs().sum() == 0
    with pytest.raises(HeadgenError, match="478"):
        render_landmark_map(pts[:468], cams())
    with pytest.raises(HeadgenError, match="B = 2"):
        render_landmark_map(pts.expand(3, -1, -1), cams((0.0, 30.0)))
    with pytest.raises(HeadgenError, match="back_view"):
        render_landmark_map(pts, cams(), back_view="empty")  # type: ignore[arg-type]


def test_projection_centre_and_orientation():
    camera = cams(res=64)
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    pix, valid = project_to_pixels(pts, camera)
    assert pix[0, 0].tolist() == [32, 32]
    assert pix[0, 1, 1] < 32  # +y is up: smaller row
    assert pix[0, 2, 0] > 32  # +x on the right in the front view
    assert valid[0, :3].all() and not valid[0, 3]  # behind the camera
