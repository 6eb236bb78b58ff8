"""``animation.mp4``: the head driven through a short sequence of expression weights, or through a
Live Link Face performance (``performance: take.csv``).

The frames show the exported surface (textured if it has an albedo map, else grey shading) with
the expression blendshapes added linearly, exactly as the morph targets of ``head.glb`` animate
it: ``v(t) = v_base + sum_e w_e(t) delta_e``. Parts with their own share of the blendshapes
(``morph_deltas``: ICT-FaceKit's eyes and teeth) move with the same weights; others (the hair) are
drawn as they are, as in ``head.glb``. Keyframes are spread evenly over the frames and
eased with smoothstep between neighbours; a performance is sampled at ``fps`` (its head rotation
plays in head.glb only). Names resolve as in :mod:`headgen.animation.clip`: a head expression, or
an ARKit shape through its mapping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from headgen.animation.clip import DEFAULT_SEQUENCE, keyframe_weights, performance_clip, smoothstep_frames
from headgen.animation.livelink import read_live_link_csv
from headgen.errors import HeadgenError
from headgen.export.gltf import expression_blendshapes
from headgen.export.images import to_uint8, write_video
from headgen.export.obj import export_surface
from headgen.export.preview import OrbitConfig, front_light, orbit_cameras
from headgen.geometry.mesh import SurfaceGeometry
from headgen.registry import register
from headgen.render.mesh_renderer import MeshRenderer
from headgen.rundir import check_inside

if TYPE_CHECKING:
    from headgen.context import RunContext

log = logging.getLogger(__name__)

@register("exporter", "animation")
class AnimationExporter:
    """animation.mp4: the head rendered through a sequence of expression weights (morph-target preview)."""

    @dataclass
    class Config(OrbitConfig):
        distance: float = 2.6  # closer than the preview's: the frames show the face's motion
        filename: str = "animation.mp4"
        """Name of the video in assets/ (a .gif is written instead when ffmpeg is unavailable)."""
        frames: int = 72
        """Number of frames."""
        resolution: int = 384
        """Pixel size of the (square) frames."""
        azimuth: float = 15.0
        """Camera azimuth in degrees (0 = front, +90 = the subject's left profile)."""
        sequence: list[dict[str, float]] | None = None
        """Keyframes {expression name: weight}, evenly spaced over the video; null = a default sequence
        (neutral, jawOpen, smile, blink, browInnerUp, neutral) whose names the head lacks are skipped.
        Names in a sequence you give must be the head's expressions or ARKit shapes it maps."""
        performance: str | None = None
        """A Live Link Face CSV: the video plays it at ``fps`` for its duration (``frames`` and
        ``sequence`` unused). Relative paths are from the working directory."""
        timecode_fps: float | None = None
        """The performance's timecode rate, for takes under a second (longer ones show it)."""

        def __post_init__(self) -> None:  # at validation, before any stage runs
            check_inside(self.filename, "exporter animation: filename")
            if self.performance is not None:
                if self.sequence is not None:
                    raise HeadgenError("exporter animation: give sequence or performance, not both")
                if not Path(self.performance).is_file():
                    raise HeadgenError(f"exporter animation: performance {self.performance}: no such file")

    def __init__(self, cfg: Config):
        if cfg.frames < 1 or cfg.fps < 1 or cfg.resolution < 8:
            raise HeadgenError(
                f"exporter animation: need frames >= 1, fps >= 1 and resolution >= 8, got frames={cfg.frames}, "
                f"fps={cfg.fps}, resolution={cfg.resolution}"
            )
        self.cfg = cfg

    def export(self, representation: Any, ctx: RunContext, assets: Path) -> dict[str, str]:
        c = self.cfg
        shapes = expression_blendshapes(representation)
        if shapes is None:
            name = getattr(representation, "registered_name", type(representation).__name__)
            raise HeadgenError(
                f"exporter animation: representation {name} has no expression blendshapes (it needs "
                "expression_deltas() or a head model with expressions, as the parametric mesh has); "
                "remove the animation exporter or convert to a parametric mesh first"
            )
        names, deltas = shapes
        if c.performance is not None:
            clip = performance_clip(read_live_link_csv(c.performance, c.timecode_fps), names, report=ctx_log(ctx))
            weights = torch.from_numpy(clip.sample(c.fps)).float()
        else:
            strict = c.sequence is not None
            keys = keyframe_weights(list(c.sequence) if strict else DEFAULT_SEQUENCE, names, strict)
            weights = torch.from_numpy(smoothstep_frames(keys, c.frames)).float()
        device = getattr(ctx, "device", torch.device("cpu"))
        frames = render_expressions(export_surface(representation).to(device), deltas.to(device), weights, c)
        return {"animation": str(write_video(assets / c.filename, frames, fps=c.fps))}


def render_expressions(surface: SurfaceGeometry, deltas: Tensor, weights: Tensor, cfg: Any) -> list[np.ndarray]:
    """One uint8 frame [H,W,3] per row of ``weights [N,E]`` (camera, resolution from ``cfg``)."""
    if deltas.shape[1] != surface.mesh.num_vertices:
        raise HeadgenError(
            f"exporter animation: the expression blendshapes have {deltas.shape[1]} vertices but the exported "
            f"mesh has {surface.mesh.num_vertices}"
        )
    mode = "rgb" if surface.albedo_map is not None or surface.v_color is not None else "shading"
    renderer = MeshRenderer(MeshRenderer.Config(resolution=cfg.resolution, background="white"))
    # Built on the CPU (the light's offset is a CPU tensor); the renderer moves both to the mesh's device.
    cams = orbit_cameras([cfg.azimuth], cfg.elevation, cfg.distance, cfg.fovy, cfg.resolution)
    light = front_light(cams)
    base = surface.mesh.v_pos.detach()
    out = []
    with torch.no_grad():
        for w in weights.to(base):
            parts = [p if p.morph_deltas is None else replace(p, mesh=p.mesh.with_positions(
                p.mesh.v_pos + torch.einsum("e,evc->vc", w, p.morph_deltas.to(base)))) for p in surface.parts]
            moved = SurfaceGeometry(
                surface.mesh.with_positions(base + torch.einsum("e,evc->vc", w, deltas.to(base))),
                albedo_map=surface.albedo_map, normal_map=surface.normal_map, v_color=surface.v_color,
                albedo_fn=surface.albedo_fn, base_color=surface.base_color, name=surface.name, parts=parts,
            )
            img = renderer.render(moved, cams, light, modes=(mode, "opacity"))
            rgb = img[mode] * img["opacity"] + (1 - img["opacity"]) if mode == "shading" else img[mode]
            out.append(to_uint8(rgb[0]))
    return out


def ctx_log(ctx: Any) -> Any:
    """The run's log (printed and kept in run.log) where there is one, else this module's logger."""
    return getattr(ctx, "log_once", None) or getattr(ctx, "log", None) or log.warning


__all__ = ["AnimationExporter", "ctx_log", "render_expressions"]
