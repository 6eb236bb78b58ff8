"""The MediaPipe landmark map: the conditioning image of the landmark ControlNet.

It reproduces the ControlNetMediaPipeFace annotator (see /work/shared/METHODS.md): a black
canvas of the camera's image size with the 124 MediaPipe face-mesh contour edges (the
``FaceLandmarksConnections`` lists of the ``mediapipe`` package) drawn with ``cv2.line`` at
thickness 2 and no anti-aliasing, and the pupils as 4x4 squares at landmarks 468 (right iris) and
473 (left iris).

Note on "2-px lines": like the annotator (MediaPipe's ``draw_landmarks`` with thickness 2), lines
are drawn by OpenCV with ``thickness=2``, which OpenCV rasterises as a band 3 pixels across an
axis-aligned line (centre +-1). This matches the images the ControlNet was trained on.

Input format: world positions indexed by MediaPipe landmark id, a tensor ``[B, N, 3]`` or
``[N, 3]`` (shared by all cameras) with ``N >= 478`` (the refined face mesh: 468 face points, then
the two irises, centres 468 and 473). Rows of ids the head model does not provide may be NaN:
edges touching a NaN point and NaN pupils are skipped.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from headgen.cameras import Cameras
from headgen.errors import HeadgenError

NUM_LANDMARKS = 478
"""Landmarks of MediaPipe's refined face mesh (468 face points + 2 x 5 iris points)."""

LANDMARK_GROUPS: tuple[str, ...] = (
    "face_oval",
    "left_eye",
    "left_eyebrow",
    "right_eye",
    "right_eyebrow",
    "lips",
)
"""Contour groups, in the annotator's drawing order (later groups are drawn over earlier ones)."""

LANDMARK_STYLE: dict[str, tuple[int, int, int]] = {
    "face_oval": (10, 200, 10),
    "lips": (10, 180, 10),
    "left_eye": (10, 200, 180),
    "left_eyebrow": (10, 220, 180),
    "right_eye": (180, 200, 10),
    "right_eyebrow": (180, 220, 10),
    # Not in the written spec: the annotator's iris colours after its final BGR -> RGB flip.
    "right_pupil": (250, 200, 10),
    "left_pupil": (10, 200, 250),
}
"""RGB colour (0..255) of every contour group and of the two pupils."""

PUPIL_IDS: dict[str, int] = {"right_pupil": 468, "left_pupil": 473}
"""Landmark id of each pupil square (iris centres of the refined mesh)."""

LINE_THICKNESS = 2
"""``cv2.line`` thickness, as in the annotator."""

PUPIL_HALF_WIDTH = 2
"""Pupil squares cover rows/cols ``[p - 2, p + 2)``: 4x4 pixels."""

_MEDIAPIPE_NAMES = {
    "face_oval": "FACE_LANDMARKS_FACE_OVAL",
    "lips": "FACE_LANDMARKS_LIPS",
    "left_eye": "FACE_LANDMARKS_LEFT_EYE",
    "left_eyebrow": "FACE_LANDMARKS_LEFT_EYEBROW",
    "right_eye": "FACE_LANDMARKS_RIGHT_EYE",
    "right_eyebrow": "FACE_LANDMARKS_RIGHT_EYEBROW",
}


@functools.cache
def landmark_edges() -> dict[str, tuple[tuple[int, int], ...]]:
    """The contour edges ``(start, end)`` of every group, read from the mediapipe package."""
    try:
        from mediapipe.tasks.python.vision import FaceLandmarksConnections
    except ImportError as exc:
        raise HeadgenError(
            "the landmark map needs the 'mediapipe' package for the face-mesh contour lists; "
            "install it with `pip install mediapipe`"
        ) from exc
    return {
        group: tuple((c.start, c.end) for c in getattr(FaceLandmarksConnections, attr))
        for group, attr in _MEDIAPIPE_NAMES.items()
    }


def contour_landmark_ids() -> list[int]:
    """The 128 landmark ids the contour edges use, sorted."""
    return sorted({i for edges in landmark_edges().values() for e in edges for i in e})


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise HeadgenError(
            "the landmark map draws with OpenCV; install it with `pip install opencv-contrib-python` "
            "(mediapipe normally brings it; not opencv-python, which would install a second cv2 over it)"
        ) from exc
    return cv2


def facing_camera(
    points: Tensor, cameras: Cameras, normals: Tensor | None = None, center: Tensor | None = None
) -> Tensor:
    """[B,N] bool: landmarks whose outward direction faces the camera.

    The outward direction is ``normals`` when given, else ``point - center`` (``center`` [3] or
    [B,3], default the world origin, where the conventions put the head). A landmark faces the
    camera when ``dot(outward, camera_position - point) > 0``.
    """
    if normals is not None:
        outward = normals.expand_as(points)
    else:
        c = torch.zeros(3, device=points.device) if center is None else center.to(points.device)
        outward = points - c.reshape(-1, 1, 3)
    to_camera = cameras.position[:, None, :].to(points.device) - points
    return (outward * to_camera).sum(-1) > 0


def project_to_pixels(points: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """Pixel coordinates [B,N,2] (x = column, y = row, row 0 = top) and a [B,N] validity mask.

    Follows MediaPipe's drawing code: normalised coordinates outside [0, 1] (and points behind
    the camera or NaN) are invalid; pixels are ``min(floor(u * W), W - 1)``.
    """
    mvp = cameras.mvp().to(points.device)
    homo = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    clip = homo @ mvp.transpose(1, 2)
    w = clip[..., 3]
    u = (clip[..., 0] / w + 1.0) * 0.5
    v = (1.0 - clip[..., 1] / w) * 0.5
    eps = 1e-9
    valid = torch.isfinite(u) & torch.isfinite(v) & (w > 0)
    valid &= (u >= -eps) & (u <= 1 + eps) & (v >= -eps) & (v <= 1 + eps)
    u, v = torch.nan_to_num(u), torch.nan_to_num(v)
    x = torch.clamp(torch.floor(u * cameras.width), 0, cameras.width - 1)
    y = torch.clamp(torch.floor(v * cameras.height), 0, cameras.height - 1)
    return torch.stack([x, y], dim=-1).long(), valid


def render_landmark_map(
    points: Tensor,
    cameras: Cameras,
    back_view: Literal["oval", "none"] = "oval",
    back_threshold: float = 90.0,
    occlusion: Literal["facing", "none"] = "facing",
    normals: Tensor | None = None,
    center: Tensor | None = None,
) -> Tensor:
    """Landmark maps [B,H,W,3] in [0, 1] on the cameras' device.

    ``points``: world positions by MediaPipe id, [B,N,3] or [N,3], N >= 478, NaN = unknown.
    ``back_view``: for cameras with |azimuth| > ``back_threshold`` draw only the face oval
    ('oval', HeadArtist) or nothing ('none', HeadSculpt's empty map); the oval is then drawn
    whole, without the occlusion test (seen from behind every face point faces away).
    ``occlusion``: 'facing' drops an edge when both its endpoints face away from the camera and a
    pupil when it faces away (see :func:`facing_camera`; ``normals`` [B,N,3] or [N,3] and
    ``center`` refine the rule); 'none' draws everything that projects into the image.
    """
    if back_view not in ("oval", "none"):
        raise HeadgenError(f"landmarks back_view must be 'oval' or 'none', got {back_view!r}")
    if occlusion not in ("facing", "none"):
        raise HeadgenError(f"landmarks occlusion must be 'facing' or 'none', got {occlusion!r}")
    if points.dim() == 2:
        points = points.unsqueeze(0)
    b = cameras.batch_size
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] not in (1, b):
        raise HeadgenError(
            f"landmark points must be [N,3] or [B,N,3] with B = {b} cameras, got {tuple(points.shape)}"
        )
    if points.shape[1] < NUM_LANDMARKS:
        raise HeadgenError(
            f"landmark points have {points.shape[1]} rows; the landmark map needs the {NUM_LANDMARKS} "
            "MediaPipe ids (refined mesh with iris centres 468 and 473); fill unknown ids with NaN"
        )
    points = points.detach().float().expand(b, -1, -1)
    if normals is not None:
        normals = normals.detach().float().to(points.device)
        normals = (normals.unsqueeze(0) if normals.dim() == 2 else normals).expand_as(points)
    pixels, valid = project_to_pixels(points, cameras)
    if occlusion == "facing":
        visible = facing_camera(points, cameras, normals, center) & torch.isfinite(points).all(-1)
    else:
        visible = torch.isfinite(points).all(-1)
    back = (cameras.azimuth.abs() > back_threshold).tolist()

    cv2 = _cv2()
    edges = landmark_edges()
    pix, ok, vis = pixels.cpu().numpy(), valid.cpu().numpy(), visible.cpu().numpy()
    out = np.zeros((b, cameras.height, cameras.width, 3), dtype=np.uint8)
    for i in range(b):
        canvas = out[i]
        if back[i] and back_view == "none":
            continue
        groups = ("face_oval",) if back[i] else LANDMARK_GROUPS
        for group in groups:
            color = LANDMARK_STYLE[group]
            for s, e in edges[group]:
                if not (ok[i, s] and ok[i, e]):
                    continue
                if not back[i] and not (vis[i, s] or vis[i, e]):
                    continue
                cv2.line(canvas, tuple(int(c) for c in pix[i, s]), tuple(int(c) for c in pix[i, e]),
                         color, LINE_THICKNESS)
        if back[i]:
            continue
        for name, idx in PUPIL_IDS.items():
            if not (ok[i, idx] and vis[i, idx]):
                continue
            x, y = (int(c) for c in pix[i, idx])
            h = PUPIL_HALF_WIDTH
            canvas[max(y - h, 0) : y + h, max(x - h, 0) : x + h] = LANDMARK_STYLE[name]
    return torch.from_numpy(out).to(cameras.c2w.device).float() / 255.0


__all__ = [
    "LANDMARK_GROUPS",
    "LANDMARK_STYLE",
    "LINE_THICKNESS",
    "NUM_LANDMARKS",
    "PUPIL_IDS",
    "contour_landmark_ids",
    "facing_camera",
    "landmark_edges",
    "project_to_pixels",
    "render_landmark_map",
]
