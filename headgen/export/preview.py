"""Previews: a grid of fixed views (shaded and textured) and a turntable video.

Parts of the surface (the hair) are drawn with the head in one depth buffer: grey in the shaded
row, in their own colour in the textured row and the turntable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from headgen.cameras import Cameras, Lights
from headgen.export.images import grid, to_uint8, write_png, write_video
from headgen.export.obj import export_surface
from headgen.geometry.mesh import SurfaceGeometry
from headgen.registry import register
from headgen.render.mesh_renderer import MeshRenderer

if TYPE_CHECKING:
    from headgen.context import RunContext


@dataclass
class OrbitConfig:
    """Options shared by the exporters that film the head from cameras orbiting it (a base of their
    ``Config``, so the keys stay top-level in the recipes)."""

    elevation: float = 5.0
    """Camera elevation in degrees (positive: above the head, looking down)."""
    distance: float = 3.0
    """Camera distance from the origin (world units; the head is about 1 tall)."""
    fovy: float = 30.0
    """Vertical field of view of the camera, in degrees."""
    fps: int = 24
    """Frames per second of the video."""


def orbit_cameras(azimuths: list[float], elevation: float, distance: float, fovy: float, size: int) -> Cameras:
    n = len(azimuths)
    return Cameras.from_spherical(
        torch.full((n,), float(elevation)), torch.tensor(azimuths, dtype=torch.float32),
        torch.full((n,), float(distance)), torch.full((n,), float(fovy)), size,
    )


def front_light(cameras: Cameras) -> Lights:
    """A key light above and to the side of each camera (reads shapes better than a headlight)."""
    n = cameras.batch_size
    offset = torch.tensor([0.4, 0.5, 0.0], device=cameras.position.device)
    direction = torch.nn.functional.normalize(torch.nn.functional.normalize(cameras.position, dim=-1) + offset, dim=-1)
    dev = direction.device
    return Lights(direction, torch.full((n, 3), 0.75, device=dev), torch.full((n, 3), 0.3, device=dev))


def render_views(surface: SurfaceGeometry, cameras: Cameras, mode: str, resolution: int, batch: int = 4) -> np.ndarray:
    """Render ``mode`` (``shading`` or ``rgb``) for every camera on a white background -> uint8 [N,H,W,3]."""
    renderer = MeshRenderer(MeshRenderer.Config(resolution=resolution, background="white"))
    out = []
    with torch.no_grad():
        for i in range(0, cameras.batch_size, batch):
            cams = cameras[i : i + batch]
            img = renderer.render(surface, cams, front_light(cams), modes=(mode, "opacity"))
            a = img["opacity"]
            rgb = img[mode] * a + (1 - a) if mode == "shading" else img[mode]
            out.append(to_uint8(rgb))
    return np.concatenate(out)


@register("exporter", "preview")
class PreviewExporter:
    """preview.png (front, 3/4, profile; shaded and textured) and a turntable video."""

    @dataclass
    class Config(OrbitConfig):
        resolution: int = 512
        """Pixel size of each view."""
        azimuths: list[float] = field(default_factory=lambda: [0.0, 35.0, 90.0])
        """Views of the grid (degrees; 0 = front, 90 = the subject's left profile)."""
        turntable_frames: int = 48
        """Frames of the turntable (0: no video)."""
        turntable_resolution: int = 384

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def export(self, representation: Any, ctx: RunContext, assets: Path) -> dict[str, str]:
        c = self.cfg
        surface = export_surface(representation).to(ctx.device)
        modes = ["shading"] + (["rgb"] if surface.albedo_map is not None or surface.v_color is not None else [])
        cams = orbit_cameras(list(c.azimuths), c.elevation, c.distance, c.fovy, c.resolution).to(ctx.device)
        rows = [list(render_views(surface, cams, mode, c.resolution)) for mode in modes]
        written = {"preview": str(write_png(assets / "preview.png", grid(rows)))}
        if c.turntable_frames > 0:
            az = [360.0 * i / c.turntable_frames for i in range(c.turntable_frames)]  # from the front
            tcams = orbit_cameras(az, c.elevation, c.distance, c.fovy, c.turntable_resolution).to(ctx.device)
            frames = render_views(surface, tcams, modes[-1], c.turntable_resolution)
            written["turntable"] = str(write_video(assets / "turntable.mp4", list(frames), fps=c.fps))
        return written
