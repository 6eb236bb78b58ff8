"""View-consistency figures of a finished head: a face detector around a turntable, and (demo
prior) PSNR per azimuth sector against the known target.

Fixed protocol (issue 16), so figures compare across methods and runs: a 24-frame turntable at
elevation 0 (azimuths 0, 15, ..., 345), distance 3, 30-degree field of view, lit by a light from
the camera, white background, 256 px, grey scale; OpenCV's bundled Haar frontal-face cascade
(``haarcascade_frontalface_default.xml``, from the opencv-contrib-python wheel) with
``detectMultiScale(scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))``. The detector was not
made for or tuned on this project, which is the point.

* ``janus_faces``: frames with |azimuth| >= 120 degrees and at least one detection (a face on the
  back of the head: the multi-face "Janus" failure);
* ``front_face``: 1 when the azimuth-0 frame has a detection, else 0;
* ``psnr_front`` / ``psnr_side`` / ``psnr_back`` (demo prior, coloured results): PSNR of the
  turntable frames in each sector (|azimuth| <= 45, 45-135, > 135) against the target's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from headgen.cameras import Cameras
from headgen.errors import HeadgenError

FRAMES = 24
SIZE = 256
ELEVATION, DISTANCE, FOVY = 0.0, 3.0, 30.0
BACK_FROM = 120.0
SECTORS = {"front": (0.0, 45.0), "side": (45.0, 135.0), "back": (135.0, 180.0)}


def turntable_azimuths() -> Tensor:
    """The 24 azimuths, wrapped to (-180, 180]."""
    az = torch.arange(FRAMES, dtype=torch.float32) * (360.0 / FRAMES)
    return torch.where(az > 180.0, az - 360.0, az)


def turntable_cameras(size: int = SIZE, device: Any = "cpu") -> Cameras:
    az = turntable_azimuths()
    n = len(az)
    return Cameras.from_spherical(torch.full((n,), ELEVATION), az, torch.full((n,), DISTANCE),
                                  torch.full((n,), FOVY), size).to(device)


def _cascade() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise HeadgenError("the face detector needs OpenCV: pip install opencv-contrib-python") from exc
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        # OpenCV 5 moved the Haar cascades out of its main module; some builds ship without them.
        raise HeadgenError(f"the face detector needs OpenCV's Haar cascades, which this OpenCV "
                           f"({getattr(cv2, '__version__', 'unknown version')}) lacks: "
                           "pip install 'opencv-contrib-python<5'")
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise HeadgenError(f"could not load OpenCV's face cascade from {path}")
    return cascade


def face_counts(images: Tensor) -> list[int]:
    """Detections per image ([N,H,W,3] in [0,1]) under the fixed protocol."""
    import cv2

    cascade = _cascade()
    out = []
    for img in images.detach().float().cpu().clamp(0, 1):
        rgb = (img.numpy() * 255.0 + 0.5).astype(np.uint8)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
        out.append(len(faces))
    return out


@torch.no_grad()
def turntable(surface: Any, size: int = SIZE, device: Any = "cpu") -> Tensor:
    """[24,size,size,3] lit renders of a surface (white background) around the turntable."""
    from headgen.prior.demo.world import camera_lights
    from headgen.render.mesh_renderer import MeshRenderer

    cams = turntable_cameras(size, device)
    light = camera_lights(cams, 1)[0]
    r = MeshRenderer(MeshRenderer.Config(resolution=size, background="white"))
    modes = ("rgb",) if _coloured(surface) else ("shading",)
    out = r.render(surface.to(device), cams, light, modes=modes)
    return out[modes[0]][..., :3]


def _coloured(surface: Any) -> bool:
    return any(getattr(surface, k, None) is not None for k in ("albedo_map", "albedo_fn", "v_color"))


def janus_scores(surface: Any, device: Any = "cpu") -> dict[str, float]:
    """``janus_faces`` and ``front_face`` of a surface (any prior)."""
    counts = face_counts(turntable(surface, SIZE, device))
    az = turntable_azimuths().abs()
    return {"janus_faces": float(sum(1 for a, c in zip(az.tolist(), counts) if a >= BACK_FROM and c > 0)),
            "front_face": float(counts[0] > 0)}


@torch.no_grad()
def sector_psnr(surface: Any, target_surface: Any, size: int = 128, device: Any = "cpu") -> dict[str, float]:
    """PSNR per azimuth sector of the turntable against a target surface (both lit alike)."""
    from headgen.prior.demo.metrics import psnr

    if not _coloured(surface):
        return {}
    got, want = turntable(surface, size, device), turntable(target_surface, size, device)
    az = turntable_azimuths().abs()
    out = {}
    for name, (lo, hi) in SECTORS.items():
        keep = (az > lo) & (az <= hi) if lo > 0 else az <= hi
        out[f"psnr_{name}"] = psnr(got[keep.to(got.device)], want[keep.to(want.device)])
    return out
