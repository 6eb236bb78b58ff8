"""The demo prior's fixed linear autoencoders, with Stable Diffusion's shapes ([B,H,W,3] in [0,1]
<-> [B,4,H/8,W/8]).

Two spatial operators share one channel map (3 -> 4 channels; decode uses its pseudo-inverse):

* ``SmoothAutoencoder``: encode is an antialiased 8x down-sampling with a separable triangle
  (tent) window of half-width 8 pixels, so neighbouring latents see overlapping pixels, like a
  real VAE's receptive fields. Its adjoint, which is what carries an SDS gradient back to pixels,
  is a piecewise-linear interpolation of the latent-grid gradient: no 8x8 block structure. decode
  is the encoder's pseudo-inverse: the least-squares piecewise-linear image (tents at 8-pixel
  spacing are the linear B-spline basis) whose encoding is the latent, so encode(decode(z)) = z in
  the channel map's range and decode(encode(x)) is x's best linear-spline approximation.
* ``LinearAutoencoder`` ("block"): 8x8 average pooling and 8x nearest up-sampling. Every gradient
  and every decoded colour change sits on an 8-pixel block edge.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows: luminance-like, two colour-opponent axes, and a fourth mixed axis, scaled so latents of
# typical images have magnitudes of order 1 (like SD latents after the scaling factor).
CHANNEL_MAP = torch.tensor(
    [
        [0.60, 0.60, 0.60],
        [0.90, -0.45, -0.45],
        [0.00, 0.80, -0.80],
        [0.35, -0.50, 0.15],
    ]
)


class LinearAutoencoder:
    """8x8 average pooling / 8x nearest up-sampling ("block"): decode(encode(x)) is the 8x8 block
    average of x, and encode(decode(z)) = z for z in the channel map's 3-dimensional range."""

    downscale = 8
    channels = 4
    kind = "block"

    def __init__(self, device: torch.device | str = "cpu"):
        self.map = CHANNEL_MAP.to(device)
        self.pinv = torch.linalg.pinv(self.map)

    def to(self, device: torch.device | str) -> LinearAutoencoder:
        return type(self)(device)

    def _channels(self, x: Tensor) -> Tensor:
        return torch.einsum("ck,bkhw->bchw", self.map.to(x), x)

    def _rgb(self, latents: Tensor) -> Tensor:
        return torch.einsum("kc,bchw->bkhw", self.pinv.to(latents), latents)

    def encode(self, images: Tensor) -> Tensor:
        return self.encode_data(images, self.downscale)

    def decode(self, latents: Tensor) -> Tensor:
        up = F.interpolate(self._rgb(latents), scale_factor=self.downscale, mode="nearest")
        return ((up + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    def encode_data(self, images: Tensor, factor: int) -> Tensor:
        """The latents of an image given at ``factor`` x the latent resolution (the demo data are
        rendered below full resolution; ``factor`` 8 is :meth:`encode`)."""
        x = images.permute(0, 3, 1, 2) * 2.0 - 1.0
        return self._channels(F.avg_pool2d(x, factor) if factor > 1 else x)

    def encode_pooled(self, images_small: Tensor) -> Tensor:
        """encode() of an image whose 8x8 blocks are already averaged (given at H/8 x W/8)."""
        return self.encode_data(images_small, 1)


@lru_cache(maxsize=32)
def tent_matrix(n: int, factor: int) -> Tensor:
    """[n, n*factor] 1D antialiased down-sampling: output i averages the pixels around its centre
    ``factor*(i+0.5)`` with triangle weights of half-width ``factor`` (rows sum to 1; at the
    borders the window is cut and renormalised)."""
    p = torch.arange(n * factor, dtype=torch.float64) + 0.5
    c = (torch.arange(n, dtype=torch.float64) + 0.5) * factor
    w = (1.0 - (p[None, :] - c[:, None]).abs() / factor).clamp_min(0.0)
    if factor == 1:
        w = torch.eye(n, dtype=torch.float64)
    return (w / w.sum(1, keepdim=True)).float()


@lru_cache(maxsize=32)
def tent_pinv(n: int, factor: int) -> Tensor:
    """[n*factor, n] pseudo-inverse of :func:`tent_matrix` (A^T (A A^T)^-1)."""
    a = tent_matrix(n, factor).double()
    return (a.T @ torch.linalg.inv(a @ a.T)).float()


class SmoothAutoencoder(LinearAutoencoder):
    """Tent-window 8x down-sampling and its pseudo-inverse (see the module docstring)."""

    kind = "smooth"

    def _down(self, x: Tensor, factor: int) -> Tensor:
        h, w = x.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(f"image size {h}x{w} is not a multiple of {factor}")
        ah, aw = tent_matrix(h // factor, factor).to(x), tent_matrix(w // factor, factor).to(x)
        return torch.einsum("ip,bcpq,jq->bcij", ah, x, aw)

    def encode_data(self, images: Tensor, factor: int) -> Tensor:
        x = images.permute(0, 3, 1, 2) * 2.0 - 1.0
        return self._channels(self._down(x, factor) if factor > 1 else x)

    def decode(self, latents: Tensor) -> Tensor:
        h, w = latents.shape[-2:]
        ph, pw = tent_pinv(h, self.downscale).to(latents), tent_pinv(w, self.downscale).to(latents)
        up = torch.einsum("pi,bcij,qj->bcpq", ph, self._rgb(latents), pw)
        return ((up + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)


AUTOENCODERS = {"block": LinearAutoencoder, "smooth": SmoothAutoencoder}
