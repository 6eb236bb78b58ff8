"""``landmark_map``: MediaPipe-style landmark contour maps at the step's cameras (landmark ControlNets)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from torch import Tensor

from headgen.context import RunContext
from headgen.errors import ConfigError, HeadgenError
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
    expression: dict[str, float] = field(default_factory=dict)
    """Blendshape weights ``{name: weight}`` of the head model (its ``expression_names``, e.g.
    ``{jawOpen: 0.3, mouthSmile_L: 0.8, mouthSmile_R: 0.8}``) posing the landmarks; empty: neutral.
    HeadArtist edits "with different text and landmarks" (Sec. 4.3): an expression edit draws the
    new expression's landmarks. Only ``source: head`` can be posed."""


@register("input", "landmark_map")
class LandmarkMapProvider(InputProvider):
    """[B,H,W,3] landmark contour maps projected at the batch's cameras, at the render's size."""

    Config = LandmarkMapConfig

    def __init__(self, cfg: LandmarkMapConfig, ctx: RunContext, stage: str):
        super().__init__(cfg, ctx, stage)
        where = f"stages.{stage}.inputs.landmark_map.expression"
        self._expression: Tensor | None = None
        if not cfg.expression:
            return
        if cfg.source != "head":
            raise ConfigError(
                f"{where} poses the head model's landmarks; with source: representation the representation's "
                "own landmarks are drawn as they are. Use source: head, or drop expression."
            )
        if ctx.config.head is None:
            raise ConfigError(f"{where} needs a head model, and this recipe has head: null")
        try:  # checked when the stage is built, not at its first step
            self._expression = ctx.head.expression_vector(cfg.expression)
        except HeadgenError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

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
            expression = self._expression
            if identity is None and expression is None:
                points = head.landmarks_mediapipe()
            else:
                beta = identity.detach().cpu() if identity is not None else None
                points = head.landmarks_mediapipe(head.vertices(beta, expression))
        image = next(iter(state.render.values()))
        cams = replace(state.views.cameras, height=image.shape[1], width=image.shape[2])
        return render_landmark_map(points.to(state.device), cams, back_view=self.cfg.back_view).to(state.device)
