"""ControlNet SDS (HeadSculpt): SDS through a landmark ControlNet; back views use the plain UNet.

The landmark ControlNet (ControlNetMediaPipeFace) sees the landmark map projected from the head
model at each camera. A back view has no face to draw (HeadSculpt renders an empty map there),
so its samples skip the ControlNet and are guided by the plain UNet with the back-view prompt
(HeadSculpt's template carries a learned ``<back-view>`` token: set it in ``prompt.templates``
and ``prompt.token_file``). The ControlNet runs once per step, on the non-back samples of both
CFG branches.

:class:`LandmarkGuidance` holds what IESD and SSD share with it: the landmark config fields, the
back-view rule and the landmark :class:`Control`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from guidance.base import GuidanceInput
from guidance.distill import DistillConfig, DistillGuidance, cfg_combine
from headgen.config.schedule import Scalar, value_at
from headgen.config.typed import model_ref
from headgen.errors import HeadgenError
from headgen.prior.backbone import Branch, Control, DiffusionBackbone, resize_images
from headgen.prior.prompts import text_views, view_texts
from headgen.registry import register

LANDMARKS = "landmarks"
"""Backbone role of the landmark ControlNet."""


@dataclass(kw_only=True)
class ControlNetSDSConfig(DistillConfig):
    controlnet: str = model_ref("controlnet_face", doc="Landmark ControlNet (a name under models:).")
    conditioning_scale: Scalar = 1.0
    """ControlNet conditioning_scale of the landmark ControlNet."""
    back_threshold: float | None = 90.0
    """Samples with |azimuth| above this (degrees) are back views, as are samples whose view label is
    'back' (null: view labels only). Keep it equal to the landmark map's back_threshold."""
    back_view_controlnet: bool = False
    """Back views go through the landmark ControlNet too, with the landmark map's back-view drawing
    (HeadArtist: the face-oval contour only). false: they skip it and use the plain UNet (HeadSculpt,
    whose back-view map is empty)."""


def back_views(inp: GuidanceInput, batch: int, threshold: float | None) -> Tensor:
    """[batch] bool (CPU): samples labelled 'back', or whose camera's |azimuth| exceeds ``threshold``."""
    labels = inp.view_labels or ["front"] * batch
    if len(labels) != batch:
        raise HeadgenError(f"the guidance got {len(labels)} view labels for a batch of {batch} renders")
    back = torch.tensor([label == "back" for label in labels], dtype=torch.bool)
    azimuth = getattr(inp.cameras, "azimuth", None)
    if threshold is not None and azimuth is not None:
        back |= azimuth.detach().cpu().abs() > threshold
    return back


def control_image(image: Tensor, z: Tensor, backbone: DiffusionBackbone, what: str) -> Tensor:
    """A [B,H,W,3] conditioning image resized to the pixel size of latents ``z``."""
    if image.dim() != 4 or image.shape[0] != z.shape[0] or image.shape[-1] != 3:
        raise HeadgenError(
            f"{what} must be [B,H,W,3] with B = {z.shape[0]} (the render batch), got {tuple(image.shape)}"
        )
    return resize_images(image.to(z.device, torch.float32), z.shape[-1] * backbone.downscale)


class LandmarkGuidance(DistillGuidance):
    """Base of the guidance that conditions a backbone on landmark maps (not registered)."""

    Config = ControlNetSDSConfig

    def uses_landmarks(self) -> bool:
        """Whether this guidance runs the landmark ControlNet."""
        return True

    def make_backbone(self, ctx: Any) -> DiffusionBackbone:
        from headgen.prior.load import get_backbone

        return get_backbone(ctx, self.cfg.model, prompt=self.cfg.prompt, controlnets=self.controlnet_roles())

    def controlnet_roles(self) -> dict[str, str]:
        """{backbone role: model name} of the ControlNets this guidance needs."""
        return {LANDMARKS: self.cfg.controlnet} if self.uses_landmarks() else {}

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("landmark_map",) if self.uses_landmarks() else ()

    def landmark_controls(self, inp: GuidanceInput, z: Tensor) -> list[Control]:
        """The landmark Control: for every sample with ``back_view_controlnet``, else for every sample
        but back views ([] when the ControlNet is off)."""
        if not self.uses_landmarks():
            return []
        who = getattr(self, "registered_name", type(self).__name__)
        image = control_image(inp.require("landmark_map", who), z, self.backbone, "landmark_map")
        # None: every row, the back views with whatever the landmark map drew for them.
        active = None if self.cfg.back_view_controlnet else ~back_views(inp, z.shape[0], self.cfg.back_threshold)
        return [Control(LANDMARKS, image, value_at(self.cfg.conditioning_scale, inp.step), active)]

    def cfg_branches(self, inp: GuidanceInput, z: Tensor) -> list[Branch]:
        """[conditional (view-dependent prompt), unconditional (negative prompt)], both with the landmark
        control, as diffusers' ControlNet pipeline conditions both halves of CFG."""
        b = z.shape[0]
        controls = self.landmark_controls(inp, z)
        labels = inp.view_labels or ["front"] * b
        texts = view_texts(self.cfg.prompt, inp.prompt, labels)
        views = text_views(self.cfg.prompt, labels)
        return [Branch(texts, controls, subject=inp.prompt, views=views),
                Branch([self.negative(inp)] * b, list(controls))]


@dataclass(kw_only=True)
class SwitchableControlNetConfig(ControlNetSDSConfig):
    use_controlnet: bool = True
    """Condition on the landmark map through the landmark ControlNet (back views use the plain UNet)."""

    def unused_models(self) -> set[str]:
        return set() if self.use_controlnet else {"controlnet"}


class SwitchableLandmarkGuidance(LandmarkGuidance):
    """A landmark guidance whose ControlNet a recipe may switch off (``use_controlnet``; not registered)."""

    def uses_landmarks(self) -> bool:
        return self.cfg.use_controlnet


@register("guidance", "controlnet-sds")
class ControlNetSDSGuidance(LandmarkGuidance):
    """ControlNet SDS (HeadSculpt): SDS through a landmark ControlNet, back views on the plain UNet."""

    Config = ControlNetSDSConfig

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        z, t, noise, z_t = self.start(inp, generator)
        branches = self.cfg_branches(inp, z)
        with torch.no_grad():
            eps_c, eps_u = self.backbone.eps(z_t, t, branches, self.views(inp))
        eps = cfg_combine(eps_c, eps_u, value_at(self.cfg.cfg, inp.step))
        grad = self.weight(t, z) * (eps - noise)
        return self.finish("sds", z, grad, t, inp.step)
