"""Image distances for losses between a render and a target image: l2, l1 and LPIPS (VGG).

LPIPS (Zhang et al. 2018) is built here from its parts: VGG16's convolutional trunk (layer names
as torchvision's ``vgg16().features``, so its ImageNet state dict loads as is) and LPIPS' five
1x1 linear heads (names as the ``lpips`` package's ``vgg.pth``: ``lin{k}.model.1.weight``).
Neither file ships with headgen and neither is downloaded: point ``vgg`` and ``linear`` at local
copies (``.pth`` loaded with ``weights_only=True``, or ``.safetensors``). The ``lpips`` package
itself is not used because it imports torchvision, which has no CPU wheel here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headgen.errors import ConfigError, ModelNotFoundError

# torchvision vgg16 "features": conv channel widths, "M" = max-pool.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# Index (in ``features``) of the ReLU after conv1_2, conv2_2, conv3_3, conv4_3, conv5_3: LPIPS' taps.
VGG16_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' input scaling (its ScalingLayer): inputs in [-1, 1] are shifted/scaled to ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    """VGG16's conv trunk up to relu5_3, with torchvision's module indices."""
    layers: list[nn.Module] = []
    c_in = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            c_in = int(item)
    return nn.Sequential(*layers)


class _Linear(nn.Module):
    """LPIPS' 1x1 head (``model.1`` is the conv; ``model.0`` is a parameter-free dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS-VGG distance of images [B,H,W,3] in [0,1] -> [B]; frozen, eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        for k, c in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{k}", _Linear(c))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def taps(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                out.append(x)
            if i == VGG16_TAPS[-1]:
                break
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        x = torch.cat([a, b]).permute(0, 3, 1, 2) * 2.0 - 1.0
        x = (x - self.shift) / self.scale
        total = torch.zeros(a.shape[0], device=a.device, dtype=x.dtype)
        for k, f in enumerate(self.taps(x)):
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fa, fb = f.chunk(2)
            total = total + getattr(self, f"lin{k}")((fa - fb).pow(2)).mean(dim=(1, 2, 3))
        return total

    @classmethod
    def from_files(cls, vgg: str | Path, linear: str | Path, device: torch.device | str = "cpu") -> LPIPS:
        """Load VGG16 ``features`` (a torchvision vgg16 state dict, ``features.`` keys) and LPIPS' heads."""
        model = cls()
        vgg_state = {k.removeprefix("features."): v for k, v in _load(vgg, "vgg").items()
                     if k.startswith("features.")}
        lin_state = _load(linear, "linear")
        missing_vgg = set(model.features.state_dict()) - set(vgg_state)
        lin_keys = {k for k in model.state_dict() if k.startswith("lin")}
        missing_lin = lin_keys - set(lin_state)
        if missing_vgg or missing_lin:
            raise ModelNotFoundError(
                f"LPIPS weights: {vgg} or {linear} lack {sorted(missing_vgg | missing_lin)[:4]}...; expected a "
                "torchvision vgg16 state dict (features.N.weight/bias) and the lpips package's v0.1 vgg.pth "
                "(lin0.model.1.weight .. lin4.model.1.weight)"
            )
        model.features.load_state_dict({k: vgg_state[k] for k in model.features.state_dict()})
        model.load_state_dict({k: lin_state[k] for k in lin_keys}, strict=False)
        return model.to(device)


def _load(path: str | Path, what: str) -> dict[str, Tensor]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelNotFoundError(
            f"LPIPS {what} weights not found at {p}: download them on a machine with network access "
            "(torchvision's vgg16 ImageNet weights; the lpips package's weights/v0.1/vgg.pth) and set the path, "
            "or use loss: l2"
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which one
        raise ModelNotFoundError(f"LPIPS {what} weights at {p} could not be read ({exc})") from exc
    if not isinstance(state, dict):
        raise ModelNotFoundError(f"LPIPS {what} weights at {p} are not a state dict")
    return state


@dataclass
class ImageLossConfig:
    kind: Literal["l2", "l1", "lpips"] = "l2"
    """l2 / l1: per-pixel mean; lpips: LPIPS-VGG (needs the two weight files below)."""
    vgg: str | None = None
    """LPIPS: torchvision vgg16 ImageNet state dict (.pth or .safetensors)."""
    linear: str | None = None
    """LPIPS: the lpips package's v0.1 vgg.pth (linear heads)."""
    l2_weight: float = 0.0
    """LPIPS: add this times the per-pixel l2 (HiFA pairs both); ignored for l2/l1."""

    def __post_init__(self) -> None:
        if self.kind == "lpips" and (not self.vgg or not self.linear):
            raise ValueError(
                "kind: lpips needs vgg: PATH (torchvision vgg16 weights) and linear: PATH (lpips v0.1 vgg.pth); "
                "or use kind: l2"
            )


class ImageLoss:
    """``loss(render, target)`` -> scalar, images [B,H,W,3] in [0,1]; LPIPS built on first use."""

    def __init__(self, cfg: ImageLossConfig):
        self.cfg = cfg
        self._lpips: LPIPS | None = None

    def lpips(self, device: torch.device) -> LPIPS:
        if self._lpips is None:
            if self.cfg.vgg is None or self.cfg.linear is None:
                raise ConfigError("image loss lpips needs vgg and linear weight paths")
            self._lpips = LPIPS.from_files(self.cfg.vgg, self.cfg.linear, device)
        return self._lpips.to(device)

    def __call__(self, render: Tensor, target: Tensor) -> Tensor:
        if render.shape != target.shape:
            raise ValueError(f"image loss: render {tuple(render.shape)} and target {tuple(target.shape)} differ")
        kind = self.cfg.kind
        if kind == "l2":
            return F.mse_loss(render, target)
        if kind == "l1":
            return F.l1_loss(render, target)
        loss = self.lpips(render.device)(render, target).mean()
        if self.cfg.l2_weight:
            loss = loss + self.cfg.l2_weight * F.mse_loss(render, target)
        return loss


__all__ = ["LPIPS", "ImageLoss", "ImageLossConfig", "vgg16_features"]
