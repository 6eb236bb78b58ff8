"""The closed-form optimal denoiser of a finite data set.

For data {x_i} (uniform prior) and x_t = sqrt(a) x_0 + sqrt(1 - a) eps, the posterior over i is
softmax_i(-||x_t - sqrt(a) x_i||^2 / (2 (1 - a))) and the optimal predictions are
x0_hat = sum_i p_i x_i, eps_hat = (x_t - sqrt(a) x0_hat) / sqrt(1 - a).
"""

from __future__ import annotations

import torch
from torch import Tensor


def posterior_logits(x_t: Tensor, data: Tensor, alpha_bar: Tensor) -> Tensor:
    """log p(i | x_t) up to a constant. x_t [N,D], data [N,M,D], alpha_bar [N] -> [N,M]."""
    a = alpha_bar.view(-1, 1)
    # ||x_t - sqrt(a) x_i||^2 expanded so no [N,M,D] difference tensor is materialised.
    xt2 = x_t.pow(2).sum(-1, keepdim=True)
    xi2 = data.pow(2).sum(-1)
    cross = torch.einsum("nd,nmd->nm", x_t, data)
    dist = xt2 - 2 * a.sqrt() * cross + a * xi2
    return -dist / (2 * (1 - a))


def posterior_mean(x_t: Tensor, data: Tensor, alpha_bar: Tensor) -> Tensor:
    """x0_hat [N,D] for each row of ``x_t`` against its own data set ``data[n]`` ([N,M,D])."""
    weights = torch.softmax(posterior_logits(x_t, data, alpha_bar), dim=-1)
    return torch.einsum("nm,nmd->nd", weights, data)


def eps_prediction(x_t: Tensor, data: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps_hat [N,D] of the optimal denoiser."""
    a = alpha_bar.view(-1, 1)
    x0 = posterior_mean(x_t, data, alpha_bar)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


__all__ = ["eps_prediction", "posterior_logits", "posterior_mean"]
