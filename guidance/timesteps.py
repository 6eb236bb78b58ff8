"""Timestep sampling and SDS weighting w(t), shared by every score-distillation guidance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from headgen.config.schedule import Scalar, value_at


@dataclass
class TimestepConfig:
    t_range: tuple[Scalar, Scalar] = (0.02, 0.98)
    """[min, max] as fractions of the training timesteps; either end may be a schedule."""
    schedule: Literal["random", "decreasing"] = "random"
    """random: t ~ U[min, max] per sample; decreasing: t falls in equal steps from max to min over the
    stage (DreamFace's texture stages)."""
    weighting: Literal["sds", "fantasia3d", "uniform"] = "sds"
    """w(t): sds = 1 - a_t (threestudio, HeadArtist); fantasia3d = sqrt(a_t)(1 - a_t) (HeadSculpt); uniform = 1."""

    def __post_init__(self) -> None:
        for end in self.t_range:
            if isinstance(end, (int, float)) and not 0.0 <= end <= 1.0:
                raise ValueError(f"t_range values are fractions in [0, 1], got {self.t_range}")


def sample_timesteps(
    cfg: TimestepConfig, step: int, total_steps: int, batch: int, num_train: int, generator: torch.Generator
) -> Tensor:
    """Integer timesteps [batch] in [1, num_train - 1] (CPU, long)."""
    lo = value_at(cfg.t_range[0], step)
    hi = value_at(cfg.t_range[1], step)
    lo_i = max(1, int(round(lo * num_train)))
    hi_i = min(num_train - 1, max(lo_i, int(round(hi * num_train))))
    if cfg.schedule == "decreasing":
        frac = step / max(1, total_steps - 1)
        t = round(hi_i - frac * (hi_i - lo_i))
        return torch.full((batch,), t, dtype=torch.long)
    return torch.randint(lo_i, hi_i + 1, (batch,), generator=generator)


def sds_weight(alphas_cumprod: Tensor, t: Tensor, mode: str) -> Tensor:
    """w(t) per sample, on the device of ``alphas_cumprod``."""
    a = alphas_cumprod[t.to(alphas_cumprod.device)]
    if mode == "sds":
        return 1.0 - a
    if mode == "fantasia3d":
        return a.sqrt() * (1.0 - a)
    if mode == "uniform":
        return torch.ones_like(a)
    raise ValueError(f"unknown weighting {mode!r}")
