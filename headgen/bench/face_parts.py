"""Does a finished run's head show a face with eyes and teeth? Figures for heads with attached parts.

    python -m headgen.bench.face_parts RUN_DIR [--size 384]

Renders the run's exported surface (the preview's camera: front, elevation 5, distance 3, fov 30,
its key light, white background) and prints as JSON:

* per eye: ``iris_px`` and ``sclera_px``, the pixels of the eyeball's iris and sclera colours
  (within 0.06 of the head model's, after lighting: the albedo render is compared) inside the
  projected bounding box of that eyeball part;
* ``faces`` / ``eyes``: detections of OpenCV's bundled ``haarcascade_frontalface_default.xml`` and
  ``haarcascade_eye.xml`` on the lit front render;
* ``jaw_open``: with the ``jawOpen`` blendshape at ``--jaw`` (0.6, the animation's keyframe), the
  mean colour change inside the mouth's projected box (lips landmarks) and the pixels of the teeth
  material there (the head model's teeth colour, albedo within 0.06).

Heads without eyeball or teeth parts report zeros for them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headgen.export.preview import front_light, orbit_cameras
from headgen.geometry.mesh import SurfaceGeometry

SIZE = 384
TOLERANCE = 0.06


def _box(px: torch.Tensor, size: int, pad: float = 0.0) -> tuple[int, int, int, int]:
    lo, hi = px.min(0).values, px.max(0).values
    span = hi - lo
    lo, hi = (lo - pad * span).floor().clamp(0, size - 1), (hi + pad * span).ceil().clamp(0, size - 1)
    return int(lo[0]), int(lo[1]), int(hi[0]) + 1, int(hi[1]) + 1


def _near(img: torch.Tensor, colour: Any) -> torch.Tensor:
    return (img - torch.as_tensor(colour, dtype=img.dtype)).abs().amax(-1) < TOLERANCE


def _moved(surface: SurfaceGeometry, names: list[str], deltas: torch.Tensor, weights: dict[str, float]
           ) -> SurfaceGeometry:
    from dataclasses import replace

    w = torch.zeros(len(names))
    for k, v in weights.items():
        if k in names:
            w[names.index(k)] = v
    parts = [p if p.morph_deltas is None else replace(p, mesh=p.mesh.with_positions(
        p.mesh.v_pos + torch.einsum("e,evc->vc", w, p.morph_deltas))) for p in surface.parts]
    return replace(surface, mesh=surface.mesh.with_positions(surface.mesh.v_pos + torch.einsum("e,evc->vc", w, deltas)),
                   parts=parts)


@torch.no_grad()
def mouth_box(representation: Any, cams: Any, size: int, pad: float = 0.25) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) pixel box of the lips' landmarks seen by ``cams`` (padded by ``pad`` of its
    size), or None when the representation's head has no landmarks."""
    from headgen.bench.metrics import _project
    from headgen.render.landmarks import landmark_edges

    head = getattr(representation, "head", None)
    if head is None or not head.num_landmarks:
        return None
    lm = head.landmarks_mediapipe(representation.vertices().detach())
    pts = lm[sorted({i for e in landmark_edges()["lips"] for i in e})]
    pts = pts[~torch.isnan(pts).any(-1)]
    return _box(_project(pts, cams)[0], size, pad=pad) if len(pts) >= 3 else None


@torch.no_grad()
def face_part_figures(representation: Any, size: int = SIZE, jaw: float = 0.6) -> dict[str, Any]:
    """The figures of the module docstring for a representation with ``export_surface``."""
    import cv2

    from headgen.bench.metrics import _project
    from headgen.export.gltf import expression_blendshapes
    from headgen.render.mesh_renderer import MeshRenderer

    surface = representation.export_surface()
    head = getattr(representation, "head", None)
    cams = orbit_cameras([0.0], 5.0, 3.0, 30.0, size)
    light = front_light(cams)
    renderer = MeshRenderer(MeshRenderer.Config(resolution=size, background="white"))

    def render(s: SurfaceGeometry) -> dict[str, torch.Tensor]:
        out = renderer.render(s, cams, light, modes=("rgb", "albedo"))
        return {k: v[0].cpu() for k, v in out.items()}

    neutral = render(surface)
    out: dict[str, Any] = {}
    parts = {p.name: p for p in surface.parts}
    model_parts = {p.name: p for p in getattr(head, "parts", [])}
    for side in ("left", "right"):
        name = f"eyeball_{side}"
        if name not in parts or name not in model_parts:
            out[f"{side}_eye"] = {"iris_px": 0, "sclera_px": 0}
            continue
        x0, y0, x1, y1 = _box(_project(parts[name].mesh.v_pos, cams)[0], size)
        patch = neutral["albedo"][y0:y1, x0:x1]
        # the eyeball's colours by brightness: pupil, iris, sclera
        colours = torch.unique(model_parts[name].vertex_colors, dim=0)
        colours = colours[colours.sum(-1).argsort()]
        iris, sclera = colours[len(colours) // 2], colours[-1]
        out[f"{side}_eye"] = {"iris_px": int(_near(patch, iris).sum()), "sclera_px": int(_near(patch, sclera).sum())}

    grey = cv2.cvtColor((neutral["rgb"].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    for key, file in (("faces", "haarcascade_frontalface_default.xml"), ("eyes", "haarcascade_eye.xml")):
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + file)
        out[key] = int(len(cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(16, 16))))

    shapes = expression_blendshapes(representation)
    box = mouth_box(representation, cams, size)
    if shapes is None or "jawOpen" not in shapes[0] or box is None:
        out["jaw_open"] = {"mouth_change": 0.0, "teeth_px": 0}
        return out
    opened = render(_moved(surface, shapes[0], shapes[1], {"jawOpen": jaw}))
    x0, y0, x1, y1 = box
    change = float((opened["rgb"][y0:y1, x0:x1] - neutral["rgb"][y0:y1, x0:x1]).abs().mean())
    teeth = model_parts.get("teeth")
    teeth_px = int(_near(opened["albedo"][y0:y1, x0:x1], teeth.color).sum()) if teeth is not None else 0
    out["jaw_open"] = {"mouth_change": round(change, 4), "teeth_px": teeth_px}
    return out


def main(argv: list[str] | None = None) -> int:
    from headgen.bench.metrics import open_run

    ap = argparse.ArgumentParser(description="Eyes, face detection and teeth of a finished run's head.")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--size", type=int, default=SIZE)
    ap.add_argument("--jaw", type=float, default=0.6)
    args = ap.parse_args(argv)
    _, rep = open_run(args.run_dir, torch.device("cpu"))
    print(json.dumps(face_part_figures(rep, args.size, args.jaw), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
