"""Pieces every score-distillation guidance shares: config, latents, CFG, the SDS loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from guidance.base import Guidance, GuidanceInput
from guidance.timesteps import TimestepConfig, sample_timesteps, sds_weight
from headgen.config.schedule import Scalar, value_at
from headgen.config.typed import model_ref
from headgen.prior.backbone import Branch, DiffusionBackbone, ViewInfo, resize_images
from headgen.prior.prompts import PromptConfig, text_views, view_texts


@dataclass(kw_only=True)
class EditTextConfig:
    """Editing by text (HeadArtist's SSD, DreamFace's texture edit): the guided prompt is
    ``edit_template`` filled with the run's prompt and the edit instruction."""

    edit_prompt: str | None = None
    """Editing: the edit text (null: the run's edit_prompt, if any; "" switches editing off)."""
    edit_template: str = "{prompt}, {edit}"
    """Editing: the guided prompt, from the original {prompt} and the {edit} text."""

    def __post_init__(self) -> None:
        missing = [k for k in ("{prompt}", "{edit}") if k not in self.edit_template]
        if missing:
            raise ValueError(f"edit_template must contain {' and '.join(missing)}, got {self.edit_template!r}")

    def edited(self, inp: GuidanceInput, who: str) -> tuple[str, str | None]:
        """(the prompt to guide with, the edit text or None when this is not an editing run)."""
        edit = inp.edit_text(self.edit_prompt, who)
        if edit is None:
            return inp.prompt, None
        return self.edit_template.replace("{prompt}", inp.prompt).replace("{edit}", edit), edit


@dataclass(kw_only=True)
class DistillConfig:
    model: str = model_ref("sd15", doc="Diffusion model (a name under models:).")
    cfg: Scalar = 100.0
    """Classifier-free guidance scale w (diffusers convention: eps_u + w (eps_c - eps_u))."""
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    """t range, schedule and w(t) weighting."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """View-dependent prompt templates, learned tokens, embedding cache."""
    negative_prompt: str | None = None
    """Negative prompt (null: the run's negative_prompt)."""
    space: Literal["rgb", "latent"] = "rgb"
    """rgb: encode the render with the VAE; latent: the render is already a latent (latent rendering)."""
    image_key: str = "rgb"
    """Which renderer output to guide (rgb, normal, latent, ...)."""
    resolution: int = 512
    """Images are resized to this before VAE encoding."""
    latent_size: int | None = None
    """In latent space, resize renders to this many latent pixels (null: guide them as rendered),
    e.g. a 512 px normal_opacity render guided as a 64x64 "latent"."""
    grad_clip: Scalar | None = None
    """Clamp the per-element gradient to [-grad_clip, grad_clip] (null: no clamp)."""
    zero_non_finite_grad: bool = False
    """Zero NaN / Inf gradient elements and go on (threestudio's behaviour). Off: a non-finite gradient
    makes the loss non-finite and the stage stops, keeping the last good checkpoint."""


def sds_loss(z: Tensor, grad: Tensor) -> Tensor:
    """0.5 ||z - sg(z - grad)||^2 / B: its gradient w.r.t. z is exactly grad / B."""
    target = (z - grad).detach()
    return 0.5 * (z - target).pow(2).sum() / z.shape[0]


def cfg_combine(eps_c: Tensor, eps_u: Tensor, w: float) -> Tensor:
    return eps_u + w * (eps_c - eps_u)


def clean_grad(grad: Tensor, clip: Scalar | None, step: int, zero_non_finite: bool = False) -> Tensor:
    """The per-element clamp of ``grad`` (``clip``). A NaN / Inf element stays as it is, so the stage's
    finiteness check stops the run with the last good checkpoint kept; ``zero_non_finite`` zeroes
    such elements instead (threestudio's behaviour: the step then trains nothing there)."""
    if zero_non_finite:
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if clip is not None:
        c = value_at(clip, step)
        grad = grad.clamp(-c, c)
    return grad


class DistillGuidance(Guidance):
    """Base of SDS-like guidance: turns the render into latents and owns the backbone."""

    Config = DistillConfig

    def __init__(self, cfg: DistillConfig, ctx: Any, backbone: DiffusionBackbone | None = None):
        super().__init__(cfg, ctx)
        self.ctx = ctx
        self.required_modes = (cfg.image_key,)
        self.total_steps = 1
        self.backbone = backbone if backbone is not None else self.make_backbone(ctx)

    optional_inputs: tuple[str, ...] = ()
    """Declared inputs that may be None (e.g. ``edit_text`` outside editing runs)."""

    def on_stage_start(self, total_steps: int) -> None:
        self.total_steps = total_steps  # schedules over the stage (e.g. decreasing t)

    def check_inputs(self, inp: GuidanceInput) -> None:
        """Fail before any model pass when a declared input is missing."""
        who = getattr(self, "registered_name", type(self).__name__)
        for name in self.inputs:
            if name not in self.optional_inputs:
                inp.require(name, who)

    def start(self, inp: GuidanceInput, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The opening every SDS-like step shares: check the declared inputs, encode the render, then
        draw t and the noise: ``(z, t, noise, z_t)``."""
        self.check_inputs(inp)
        z = self.latents(inp)
        t, noise, z_t = self.noise_and_t(z, inp.step, generator)
        return z, t, noise, z_t

    def make_backbone(self, ctx: Any) -> DiffusionBackbone:
        from headgen.prior.load import get_backbone

        return get_backbone(ctx, self.cfg.model, prompt=self.cfg.prompt)

    def views(self, inp: GuidanceInput) -> ViewInfo:
        """What a prior that renders its own data (the demo prior) needs to know about the batch."""
        return ViewInfo(cameras=inp.cameras, lights=inp.lights, image_key=self.cfg.image_key, space=self.cfg.space)

    def negative(self, inp: GuidanceInput) -> str:
        return self.cfg.negative_prompt if self.cfg.negative_prompt is not None else inp.negative_prompt

    def latents(self, inp: GuidanceInput) -> Tensor:
        images = inp.render[self.cfg.image_key]
        if self.cfg.space == "latent":
            if self.cfg.latent_size is not None:
                images = resize_images(images, self.cfg.latent_size)
            return images.permute(0, 3, 1, 2)
        if self.cfg.image_key == "normal" and images.shape[-1] == 3:
            images = images.clamp(0.0, 1.0)
        return self.backbone.encode(resize_images(images[..., :3], self.cfg.resolution))

    def noise_and_t(self, z: Tensor, step: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        bb = self.backbone
        t = sample_timesteps(self.cfg.timesteps, step, self.total_steps, z.shape[0], bb.num_train_timesteps, generator)
        noise, z_t = self.noised(z, t, generator)
        return t.to(z.device), noise, z_t

    def noised(self, z: Tensor, t: Tensor, generator: torch.Generator,
               backbone: DiffusionBackbone | None = None) -> tuple[Tensor, Tensor]:
        """Draw the noise for latents ``z`` at timesteps ``t``: ``(noise, z_t)`` (``backbone``: whose
        schedule; the guidance's own by default)."""
        noise = torch.randn(z.shape, generator=generator).to(z)
        return noise, (backbone or self.backbone).add_noise(z.detach(), noise, t.to(z.device))

    def sds_grad(self, inp: GuidanceInput, generator: torch.Generator, subject: str | None = None,
                 edit: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Plain text-conditioned SDS: (latents z, grad = w(t) (eps_cfg - eps), t); draws t then noise.
        ``subject`` / ``edit``: what the prompt describes when it is an edited one (for the demo prior)."""
        z, t, noise, z_t = self.start(inp, generator)
        b = z.shape[0]
        labels = inp.view_labels or ["front"] * b
        texts = view_texts(self.cfg.prompt, inp.prompt, labels)
        with torch.no_grad():
            branches = [Branch(texts, subject=subject or inp.prompt, edit=edit,
                               views=text_views(self.cfg.prompt, labels)),
                        Branch([self.negative(inp)] * b)]
            eps_c, eps_u = self.backbone.eps(z_t, t, branches, self.views(inp))
        grad = self.weight(t, z) * (cfg_combine(eps_c, eps_u, value_at(self.cfg.cfg, inp.step)) - noise)
        return z, grad, t

    def weight(self, t: Tensor, z: Tensor, backbone: DiffusionBackbone | None = None) -> Tensor:
        """w(t) as [B,1,1,1] (``backbone``: whose schedule; the guidance's own by default)."""
        alphas = (backbone or self.backbone).alphas_cumprod
        return sds_weight(alphas, t, self.cfg.timesteps.weighting).to(z).view(-1, 1, 1, 1)

    def finish(self, name: str, z: Tensor, grad: Tensor, t: Tensor, step: int) -> dict[str, Tensor]:
        grad = clean_grad(grad, self.cfg.grad_clip, step, self.cfg.zero_non_finite_grad)
        return {
            f"loss_{name}": sds_loss(z, grad),
            "grad_norm": grad.detach().flatten(1).norm(dim=1).mean(),
            "t": t.float().mean().detach() / self.backbone.num_train_timesteps,
        }
