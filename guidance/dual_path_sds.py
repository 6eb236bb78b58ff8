"""Dual-path SDS (DreamFace's texture stages): a generic path on the render, a texture path on the UV latent.

* Generic path: SDS exactly as ``sds`` on the render (``image_key``, ``space``) with the
  view-dependent prompt P through ``model``.
* Texture path: SDS on the UV texture latent z (4 channels, already multiplied by the VAE
  scaling factor, like every latent here) with P' = P + ``texture_prompt_suffix`` (the learned
  domain token) through ``texture_model``, whose UNet may take a fifth input channel: the non-face
  mask, all ones at inference (``mask_channel``), concatenated after the 4 latent channels.

The texture latent is read from ``inp.render[texture_key]`` ([N,h,w,4], the render layout) when
``texture_key`` is set, else from ``inp.extra['texture_latent']`` ([N,4,h,w] or [4,h,w], N = 1 in
DreamFace). Both paths share t: the texture path uses the first sample's t (all samples share it
under DreamFace's decreasing schedule). Random draws, in order: t (as ``sds``), the generic noise
[B,4,h,w], then the texture noise [N,4,h,w]; so the generic path sees exactly the draws ``sds``
would see with the same generator.

One loss ``loss_sds = lambda_g L_g + lambda_tau L_tau``; ``sds_generic``/``sds_texture`` log the
two terms under keys that are not summed. ``texture_path: false`` turns the texture path off
(the paper's ablation): the result is then the generic SDS, scaled by lambda_g.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from guidance.base import GuidanceInput
from guidance.distill import DistillConfig, DistillGuidance, EditTextConfig, cfg_combine
from headgen.config.schedule import Scalar, value_at
from headgen.config.typed import model_ref
from headgen.errors import HeadgenError
from headgen.prior.backbone import Branch, DiffusionBackbone, ViewInfo
from headgen.prior.prompts import PromptConfig
from headgen.registry import register

TEXTURE_VIEW = "uv_albedo"
"""``ViewInfo.image_key`` of the texture path (a UV latent, no camera): the demo prior's texture analogue."""


@dataclass(kw_only=True)
class DualPathSDSConfig(DistillConfig, EditTextConfig):
    texture_path: bool = True
    """Run the texture path (false: generic SDS only, DreamFace's ablation)."""
    texture_model: str = model_ref("dreamface_texture", doc="Texture diffusion model (a name under models:).")
    texture_prompt_suffix: str = ", <dreamface-texture>"
    """Appended to the prompt for the texture path (P' = P + suffix, the learned domain token)."""
    texture_token_file: str | None = None
    """Textual-inversion file with the texture model's learned tokens (null: none)."""
    texture_negative_prompt: str | None = None
    """Negative prompt of the texture path (null: the generic path's)."""
    texture_cfg: Scalar | None = None
    """CFG scale of the texture path (null: cfg)."""
    texture_key: str | None = None
    """Render output holding the UV texture latent (null: read inp.extra['texture_latent'])."""
    mask_channel: bool = True
    """The texture UNet takes 4 + 1 input channels: an all-ones mask is concatenated after the latent."""
    lambda_g: Scalar = 1.0
    """Weight of the generic path's loss."""
    lambda_tau: Scalar = 1.0
    """Weight of the texture path's loss."""

    def unused_models(self) -> set[str]:
        return set() if self.texture_path else {"texture_model"}

    def without_model(self, field: str) -> str | None:
        # DreamFace's texture LDM is not public: without it the stage still runs the generic path,
        # which is the paper's "w/o texture" ablation (Sec. 7.3.3, Fig. 15), rather than nothing at all.
        if field != "texture_model":
            return None
        self.texture_path = False
        return 'texture path off: generic SDS only (the paper\'s "w/o texture" ablation, Sec. 7.3.3)'


@register("guidance", "dual-path-sds")
class DualPathSDSGuidance(DistillGuidance):
    """Dual-path SDS (DreamFace): generic SDS on the render + texture-model SDS on the UV latent."""

    Config = DualPathSDSConfig

    def __init__(
        self,
        cfg: DualPathSDSConfig,
        ctx: Any,
        backbone: DiffusionBackbone | None = None,
        texture_backbone: DiffusionBackbone | None = None,
    ):
        super().__init__(cfg, ctx, backbone)
        if cfg.texture_key is not None:
            self.required_modes = (cfg.image_key, cfg.texture_key)
        self.texture_backbone: DiffusionBackbone | None = None
        if cfg.texture_path:
            self.texture_backbone = texture_backbone or self.make_texture_backbone(ctx)
            self._check_texture_unet()

    def make_texture_backbone(self, ctx: Any) -> DiffusionBackbone:
        from headgen.prior.load import get_backbone

        prompt = PromptConfig(view_dependent=False, token_file=self.cfg.texture_token_file,
                              cache_dir=self.cfg.prompt.cache_dir)
        return get_backbone(ctx, self.cfg.texture_model, prompt=prompt)

    def _check_texture_unet(self) -> None:
        unet = getattr(self.texture_backbone, "unet", None)
        if unet is None:  # the demo prior's texture analogue has no UNet and no mask input
            return
        got = int(unet.config.in_channels)
        want = 4 + int(self.cfg.mask_channel)
        if got != want:
            raise HeadgenError(
                f"texture model '{self.cfg.texture_model}' has a UNet with {got} input channels but "
                f"mask_channel is {str(self.cfg.mask_channel).lower()} ({want} channels): set mask_channel: "
                f"{str(got == 5).lower()} or use another texture_model"
            )

    def texture_latent(self, inp: GuidanceInput) -> Tensor:
        """[N,4,h,w] UV texture latent."""
        if self.cfg.texture_key is not None:
            if self.cfg.texture_key not in inp.render:
                raise HeadgenError(
                    f"dual-path-sds: texture_key '{self.cfg.texture_key}' is not among the render outputs "
                    f"({', '.join(inp.render) or 'none'})"
                )
            lat = inp.render[self.cfg.texture_key]
            lat = lat.unsqueeze(0) if lat.dim() == 3 else lat
            lat = lat.permute(0, 3, 1, 2)
        else:
            lat = inp.extra.get("texture_latent")
            if lat is None:
                raise HeadgenError(
                    "dual-path-sds: the texture path needs the UV texture latent, but inp.extra has no "
                    "'texture_latent' and texture_key is not set; use a latent-texture representation, set "
                    "texture_key, or set texture_path: false to run the generic path only"
                )
            lat = lat.unsqueeze(0) if lat.dim() == 3 else lat
        if lat.dim() != 4 or lat.shape[1] != 4:
            raise HeadgenError(
                f"dual-path-sds: the texture latent must have 4 channels, got shape {tuple(lat.shape)}"
            )
        return lat

    optional_inputs = ("edit_text",)  # no edit text: not an editing run

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*super().inputs, "edit_text")

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> dict[str, Tensor]:
        tex = self.texture_latent(inp) if self.cfg.texture_path else None
        # Texture editing (DreamFace Fig. 11): both paths guide with the edited prompt.
        text, edit = self.cfg.edited(inp, "dual-path-sds")
        subject = inp.prompt
        inp = replace(inp, prompt=text)
        z, grad, t = self.sds_grad(inp, generator, subject=subject, edit=edit)
        out = self.finish("sds", z, grad, t, inp.step)
        loss_g = out["loss_sds"]
        out["sds_generic"] = loss_g.detach()
        loss = value_at(self.cfg.lambda_g, inp.step) * loss_g
        if tex is not None:
            loss_tau, out["grad_norm_texture"] = self.texture_loss(inp, tex, t, generator, subject, edit)
            out["sds_texture"] = loss_tau.detach()
            loss = loss + value_at(self.cfg.lambda_tau, inp.step) * loss_tau
        out["loss_sds"] = loss
        return out

    def texture_loss(
        self, inp: GuidanceInput, tex: Tensor, t: Tensor, generator: torch.Generator, subject: str | None = None,
        edit: str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """SDS loss on the texture latent and its gradient's mean norm, at the generic path's first t
        (the texture backbone's noise schedule and weighting; the distill steps of every SDS)."""
        bb = self.texture_backbone
        assert bb is not None
        n = tex.shape[0]
        t_tau = t[:1].expand(n).to(tex.device)
        noise, z_t = self.noised(tex, t_tau, generator, bb)
        negative = self.cfg.texture_negative_prompt
        negative = self.negative(inp) if negative is None else negative
        text = inp.prompt + self.cfg.texture_prompt_suffix
        branches = [Branch([text] * n, subject=subject or inp.prompt, edit=edit), Branch([negative] * n)]
        views = ViewInfo(cameras=None, image_key=TEXTURE_VIEW, space="latent")
        # DreamFace's texture UNet reads an all-ones mask channel after the latent
        mask = torch.ones_like(z_t[:, :1]) if self.cfg.mask_channel else None
        with torch.no_grad():
            eps_c, eps_u = bb.eps(z_t, t_tau, branches, views, extra_channels=mask)
        w = value_at(self.cfg.cfg if self.cfg.texture_cfg is None else self.cfg.texture_cfg, inp.step)
        out = self.finish("texture", tex, self.weight(t_tau, tex, bb) * (cfg_combine(eps_c, eps_u, w) - noise), t_tau,
                          inp.step)
        return out["loss_texture"], out["grad_norm"]
