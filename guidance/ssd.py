"""Self score distillation (HeadArtist).

The same frozen (Control)Net is evaluated twice on the same noisy latent and landmark map:
``eps_w = eps_u' + w (eps_c - eps_u')`` with u' the negative prompt, and ``eps_1 = eps_c`` of the
reference prompt (CFG 1). The gradient is ``w(t) (eps_w - eps_1)``: the sampled noise does not
appear. HeadArtist (paper 5.1, the authors' code): eps_c has the view-dependent prompt, eps_1 the
plain one (``view_dependent_reference: false``), one branch more than SDS with CFG, batched into
the same UNet and ControlNet calls (3 branches). With a view-independent prompt (or a
view-dependent reference) ``eps_1`` is the conditional pass already computed (2 branches), and SSD
becomes SDS(w) - SDS(1). Back views go through the landmark ControlNet with their contour-only
map (``back_view_controlnet``).

Editing (HeadArtist edits by text): with an edit prompt (the run's ``edit_prompt``, or the
guidance's own), the prompt becomes ``edit_template`` filled with the prompt and the edit, and
both the conditional branch and the reference use it; the branches say so (``subject`` = the
original prompt, ``edit`` = the edit), so the demo prior's conditional data are the edited target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from guidance.base import GuidanceInput
from guidance.controlnet_sds import SwitchableControlNetConfig, SwitchableLandmarkGuidance
from guidance.distill import EditTextConfig, cfg_combine
from headgen.config.schedule import value_at
from headgen.prior.backbone import Branch, ViewInfo
from headgen.registry import register


@dataclass(kw_only=True)
class SSDConfig(SwitchableControlNetConfig, EditTextConfig):
    back_view_controlnet: bool = True
    """Back views go through the landmark ControlNet with the back-view map (HeadArtist, paper 5.1:
    "for the back-view, we exclude facial features in the landmark and solely project the head's
    contour"); false: they use the plain UNet, as controlnet-sds does."""
    view_dependent_reference: bool = False
    """The reference eps_1 uses the view-dependent prompt (true) or the plain prompt (false, HeadArtist)."""
    ablation: Literal["ssd", "sds"] = "ssd"
    """ssd: self score distillation; sds: SDS with CFG on the same model and controls (the paper's
    ablation). The loss key stays loss_ssd, so a recipe switches with this option alone."""


@register("guidance", "ssd")
class SSDGuidance(SwitchableLandmarkGuidance):
    """SSD (HeadArtist): grad = w(t) (eps_u' + w (eps_c - eps_u') - eps_c(reference)), no noise term."""

    Config = SSDConfig
    optional_inputs = ("edit_text",)  # no edit text: not an editing run

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*super().inputs, "edit_text")

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        z, t, noise, z_t = self.start(inp, generator)
        grad, _ = self.ssd_grad(inp, z, t, noise, z_t, self.views(inp))
        return self.finish("ssd", z, grad, t, inp.step)

    def ssd_grad(self, inp: GuidanceInput, z: Tensor, t: Tensor, noise: Tensor, z_t: Tensor,
                 views: ViewInfo) -> tuple[Tensor, list[Branch]]:
        """The SSD (or, ablated, SDS) gradient on latents ``z`` and the [conditional, negative] CFG
        branches it used (the refine stage samples its target with them)."""
        b = z.shape[0]
        text, edit = self.cfg.edited(inp, "ssd")
        branches = self.cfg_branches(replace(inp, prompt=text), z)
        cond = branches[0]
        # What the texts describe, for priors that do not read text (the demo prior).
        cond.subject, cond.edit = inp.prompt, edit
        reference = cond.texts if self.cfg.view_dependent_reference else [text] * b
        extra_pass = self.cfg.ablation == "ssd" and reference != cond.texts
        if extra_pass:
            branches.append(Branch(reference, list(cond.controls), subject=inp.prompt, edit=edit))  # plain text
        with torch.no_grad():
            eps = self.backbone.eps(z_t, t, branches, views)
        eps_c, eps_u = eps[0], eps[1]
        w = value_at(self.cfg.cfg, inp.step)
        if self.cfg.ablation == "sds":
            grad = self.weight(t, z) * (cfg_combine(eps_c, eps_u, w) - noise)
        else:
            eps_1 = eps[2] if extra_pass else eps_c
            # eps_w - eps_1 written so that w = 1 with eps_1 = eps_c gives exactly zero.
            grad = self.weight(t, z) * ((eps_c - eps_1) + (w - 1.0) * (eps_c - eps_u))
        return grad, branches[:2]
