"""Drawing a sample from a backbone: SDEdit with diffusers' DDIM scheduler, or a sample from pure
noise (DDIM or DPM-Solver++, as HeadArtist's refine target).

The refine stage of HeadArtist (after HiFA) needs a clean image that the (Control)Net would make
of the current render: the render is encoded, noised to ``t_start`` and denoised with CFG by
deterministic DDIM (eta 0) over the scheduler's timesteps at or below ``t_start``. Both the
pretrained backbone and the demo prior answer ``eps``, so the same sampler serves both; the
scheduler is built from the backbone's own ``alphas_cumprod``, so it matches the model's training
schedule whatever it is.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from torch import Tensor

from guidance.distill import cfg_combine
from headgen.prior.backbone import Branch, DiffusionBackbone, ViewInfo


def _betas(backbone: DiffusionBackbone) -> Tensor:
    """The backbone's betas, recovered from its alphas_cumprod."""
    a = backbone.alphas_cumprod.detach().double().cpu()
    prev = torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
    return (1.0 - a / prev).clamp(0.0, 0.999)


def ddim_scheduler(backbone: DiffusionBackbone) -> DDIMScheduler:
    """A DDIM scheduler on the backbone's noise schedule (betas recovered from alphas_cumprod)."""
    return DDIMScheduler(
        num_train_timesteps=backbone.num_train_timesteps, trained_betas=_betas(backbone).numpy(), clip_sample=False,
        set_alpha_to_one=True, prediction_type="epsilon",
    )


def dpm_solver_scheduler(backbone: DiffusionBackbone) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2nd order, multistep: diffusers' defaults, as its SD pipelines use it) on the
    backbone's noise schedule."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=backbone.num_train_timesteps, trained_betas=_betas(backbone).numpy(),
        prediction_type="epsilon",
    )


@torch.no_grad()
def noise_sample(
    backbone: DiffusionBackbone,
    noise: Tensor,
    branches: list[Branch],
    cfg: float,
    steps: int,
    scheduler: DDIMScheduler | DPMSolverMultistepScheduler,
    views: ViewInfo | None = None,
) -> Tensor:
    """Latents [B,4,h,w] of a CFG sample from pure ``noise`` over ``steps`` of ``scheduler``'s
    timesteps (the whole schedule). ``branches`` = [conditional, unconditional]; each step is one
    batched ``backbone.eps`` call on both."""
    if len(branches) != 2:
        raise ValueError(f"noise_sample needs [conditional, unconditional] branches, got {len(branches)}")
    if steps < 1:
        raise ValueError(f"sampling needs at least 1 step, got {steps}")
    scheduler.set_timesteps(steps)  # also resets a multistep solver's history
    z = noise * scheduler.init_noise_sigma
    b = z.shape[0]
    for t in scheduler.timesteps:
        t_batch = torch.full((b,), int(t), dtype=torch.long, device=z.device)
        eps_c, eps_u = backbone.eps(z, t_batch, branches, views)
        eps = cfg_combine(eps_c, eps_u, cfg)
        z = scheduler.step(eps.float(), t, z.float()).prev_sample.to(noise.dtype)
    return z


def sampling_timesteps(scheduler: DDIMScheduler, steps: int, t_start: int) -> list[int]:
    """The scheduler's timesteps (``steps`` over the whole schedule) at or below ``t_start``, high
    to low; at least the last one, so a sample always takes one denoising step."""
    if steps < 1:
        raise ValueError(f"sampling needs at least 1 step, got {steps}")
    scheduler.set_timesteps(steps)
    ts = [int(t) for t in scheduler.timesteps]
    kept = [t for t in ts if t <= t_start]
    return kept or ts[-1:]


@torch.no_grad()
def sdedit_sample(
    backbone: DiffusionBackbone,
    z0: Tensor,
    t_start: int,
    branches: list[Branch],
    cfg: float,
    steps: int,
    generator: torch.Generator,
    views: ViewInfo | None = None,
    scheduler: DDIMScheduler | None = None,
) -> Tensor:
    """Latents [B,4,h,w] of a CFG sample started from ``z0`` noised to ``t_start``.

    ``branches`` = [conditional, unconditional] as for SDS; each denoising step is one batched
    ``backbone.eps`` call on both.
    """
    if len(branches) != 2:
        raise ValueError(f"sdedit_sample needs [conditional, unconditional] branches, got {len(branches)}")
    scheduler = scheduler or ddim_scheduler(backbone)
    ts = sampling_timesteps(scheduler, steps, t_start)
    b = z0.shape[0]
    noise = torch.randn(z0.shape, generator=generator).to(z0)
    z = backbone.add_noise(z0.detach(), noise, torch.full((b,), ts[0], dtype=torch.long, device=z0.device))
    for t in ts:
        t_batch = torch.full((b,), t, dtype=torch.long, device=z0.device)
        eps_c, eps_u = backbone.eps(z, t_batch, branches, views)
        eps = cfg_combine(eps_c, eps_u, cfg)
        z = scheduler.step(eps.float(), t, z.float(), eta=0.0).prev_sample.to(z0.dtype)
    return z


__all__ = ["ddim_scheduler", "dpm_solver_scheduler", "noise_sample", "sampling_timesteps", "sdedit_sample"]
