"""``landmark_map``: MediaPipe-style landmark contour maps at the step's cameras (landmark ControlNets)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from torch import Tensor

from headgen.errors import ConfigError
from headgen.inputs.base import InputProvider, StepState
from headgen.registry import register
from headgen.render.landmarks import render_landmark_map


@dataclass
class LandmarkMapConfig:
    source: Literal["head", "representation"] = "head"
    """head: the head model's landmarks (of the representation's selected identity when it has one,
    else the template); representation: the representation's own landmarks (parametric meshes)."""
    back_view: Literal["oval", "none"] = "oval"
    """Back views (|azimuth| > 90) draw the face oval only (HeadArtist) or nothing (HeadSculpt)."""


@register("input", "landmark_map")
class LandmarkMapProvider(InputProvider):
    """[B,H,W,3] landmark contour maps projected at the batch's cameras, at the render's size."""

    Config = LandmarkMapConfig

    def __call__(self, state: StepState) -> Tensor:
        rep = state.representation
        if self.cfg.source == "representation":
            fn = getattr(rep, "landmarks_mediapipe", None)
            if fn is None:
                raise ConfigError(
                    f"stages.{state.stage}.inputs.landmark_map.source: the representation has no landmarks of "
                    "its own; use source: head"
                )
            points = fn().detach()
        else:
            head = self.ctx.head
            identity = rep.head_identity()
            points = head.landmarks_mediapipe(head.vertices(identity.detach().cpu()) if identity is not None else None)
        image = next(iter(state.render.values()))
        cams = replace(state.views.cameras, height=image.shape[1], width=image.shape[2])
        return render_landmark_map(points.to(state.device), cams, back_view=self.cfg.back_view).to(state.device)
