"""The demo prior's fixed linear autoencoder, with Stable Diffusion's shapes.

encode: [B,H,W,3] in [0,1] -> 8x8 average pooling -> a fixed 3->4 channel map -> [B,4,H/8,W/8];
decode: the pseudo-inverse channel map, then 8x nearest up-sampling. decode(encode(x)) is the
8x8 block average of x, and encode(decode(z)) = z for z in the map's 3-dimensional range.
"""

from __future__ import annotations

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
    downscale = 8
    channels = 4

    def __init__(self, device: torch.device | str = "cpu"):
        self.map = CHANNEL_MAP.to(device)
        self.pinv = torch.linalg.pinv(self.map)

    def to(self, device: torch.device | str) -> LinearAutoencoder:
        return LinearAutoencoder(device)

    def encode(self, images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2) * 2.0 - 1.0
        pooled = F.avg_pool2d(x, self.downscale)
        return torch.einsum("ck,bkhw->bchw", self.map.to(x), pooled)

    def decode(self, latents: Tensor) -> Tensor:
        rgb = torch.einsum("kc,bchw->bkhw", self.pinv.to(latents), latents)
        up = F.interpolate(rgb, scale_factor=self.downscale, mode="nearest")
        return ((up + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    def encode_pooled(self, images_small: Tensor) -> Tensor:
        """encode() of an image whose 8x8 blocks are already averaged (given at H/8 x W/8)."""
        x = images_small.permute(0, 3, 1, 2) * 2.0 - 1.0
        return torch.einsum("ck,bkhw->bchw", self.map.to(x), x)
