"""Identity-aware editing score distillation (HeadSculpt's IESD).

Two scores from one MultiControlNet backbone, each with diffusers CFG and its own unconditional
branch (negative prompt, same controls):

* identity ``eps_id``: landmark ControlNet, the original view-dependent prompt;
* edit ``eps_edit``: landmark + InstructPix2Pix ControlNets, the edit instruction; the ip2p control
  image is a render of the frozen pre-edit model at the same camera (``inp.source_render``).

They are blended as ``eps = eps_id + l_e (eps_edit - eps_id)`` and distilled as SDS. The four
branches go through ONE backbone call: one UNet call, one landmark-ControlNet call (all non-back
samples of the four branches), one ip2p call (the two edit branches). Back views skip the
landmark ControlNet as in controlnet-sds; the ip2p ControlNet sees every sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from guidance.base import GuidanceInput
from guidance.controlnet_sds import ControlNetSDSConfig, LandmarkGuidance, control_image
from guidance.distill import cfg_combine
from headgen.config.schedule import Scalar, value_at
from headgen.config.typed import model_ref
from headgen.errors import HeadgenError
from headgen.prior.backbone import Branch, Control
from headgen.registry import register

IP2P = "ip2p"
"""Backbone role of the InstructPix2Pix ControlNet."""


@dataclass(kw_only=True)
class IESDConfig(ControlNetSDSConfig):
    ip2p_controlnet: str = model_ref(
        "controlnet_ip2p", doc="InstructPix2Pix ControlNet (control_v11e_sd15_ip2p), a name under models:."
    )
    ip2p_scale: Scalar = 1.0
    """ControlNet conditioning_scale of the ip2p ControlNet."""
    edit_scale: Scalar = 0.5
    """l_e in eps_id + l_e (eps_edit - eps_id): 0 keeps the identity score, 1 uses the edit score alone."""
    edit_cfg: Scalar | None = None
    """CFG scale of the edit score (null: the same as cfg, the identity score's scale)."""
    edit_prompt: str | None = None
    """The edit instruction (null: the run's edit prompt, the input edit_text)."""


@register("guidance", "iesd")
class IESDGuidance(LandmarkGuidance):
    """IESD (HeadSculpt editing): SDS on eps_id + l_e (eps_edit - eps_id) from landmark + ip2p ControlNets."""

    Config = IESDConfig

    optional_inputs = ("edit_text",)  # the guidance's own edit_prompt may stand in (checked in edit_prompt)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*super().inputs, "source_render", "edit_text")

    def controlnet_roles(self) -> dict[str, str]:
        return {**super().controlnet_roles(), IP2P: self.cfg.ip2p_controlnet}

    def edit_prompt(self, inp: GuidanceInput) -> str:
        text = inp.edit_text(self.cfg.edit_prompt, "iesd")
        if not text:
            raise HeadgenError(
                "iesd needs an edit instruction: pass the run's edit prompt or set the guidance's edit_prompt"
            )
        return text

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        self.check_inputs(inp)
        edit = self.edit_prompt(inp)
        z, t, noise, z_t = self.start(inp, generator)
        b = z.shape[0]
        identity = self.cfg_branches(inp, z)
        landmark = identity[0].controls
        source = control_image(inp.inputs["source_render"], z, self.backbone, "source_render")
        controls = [*landmark, Control(IP2P, source, value_at(self.cfg.ip2p_scale, inp.step))]
        edit_branches = [
            Branch([edit] * b, controls, subject=inp.prompt, edit=edit),
            Branch([self.negative(inp)] * b, list(controls)),
        ]
        with torch.no_grad():
            id_c, id_u, ed_c, ed_u = self.backbone.eps(z_t, t, identity + edit_branches, self.views(inp))
        w_id = value_at(self.cfg.cfg, inp.step)
        w_ed = w_id if self.cfg.edit_cfg is None else value_at(self.cfg.edit_cfg, inp.step)
        eps_id = cfg_combine(id_c, id_u, w_id)
        eps_edit = cfg_combine(ed_c, ed_u, w_ed)
        eps = eps_id + value_at(self.cfg.edit_scale, inp.step) * (eps_edit - eps_id)
        grad = self.weight(t, z) * (eps - noise)
        return self.finish("iesd", z, grad, t, inp.step)
