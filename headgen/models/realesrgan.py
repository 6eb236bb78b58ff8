"""Real-ESRGAN's generator (RRDBNet, Wang et al. 2021) and the safe loading of its public weight files.

The architecture is ESRGAN's: a first convolution, a trunk of residual-in-residual dense blocks
(each three 5-convolution dense blocks), a trunk convolution, two nearest-neighbour x2 upsamplings
each followed by a convolution, and two output convolutions. Module names follow the public
implementation (``basicsr/archs/rrdbnet_arch.py``: ``conv_first``, ``body.N.rdbK.convM``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so the released files
(``RealESRGAN_x4plus.pth``: 64 features, 23 blocks, growth 32, x4; ``RealESRGAN_x2plus.pth``: the
same at x2, whose input is pixel-unshuffled) load as they are. The sizes are read from the
weights, so any RRDBNet checkpoint (e.g. the 6-block anime model, or a fine-tune such as
DreamFace's) loads without configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headgen.errors import HeadgenError, ModelNotFoundError

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing the block input and every earlier output; residual scaled 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, residual scaled 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator. Input [B,C,H,W] in [0,1]; output [B,C,H*scale,W*scale].

    The trunk always upsamples x4; x2 and x1 models pixel-unshuffle their input first (so H and W
    must be multiples of 2 and 4 for them)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.unshuffle = 4 // scale
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


_BODY_KEY = re.compile(r"^body\.(\d+)\.rdb[123]\.conv[1-5]\.(weight|bias)$")


def rrdbnet_from_state_dict(state: dict[str, Tensor], source: str = "the state dict") -> RRDBNet:
    """An RRDBNet sized from ``state`` (features, blocks, growth, scale) with ``state`` loaded."""
    if "conv_first.weight" not in state or "conv_last.weight" not in state:
        some = ", ".join(sorted(state)[:6]) or "no keys"
        raise HeadgenError(
            f"{source} is not an RRDBNet (Real-ESRGAN x4plus/x2plus layout): it has no conv_first/conv_last "
            f"weights (its keys start: {some}). Compact models such as realesr-general-x4v3 (SRVGGNet) are "
            "another architecture; use RealESRGAN_x4plus.pth or RealESRGAN_x2plus.pth"
        )
    blocks = {int(m.group(1)) for k in state if (m := _BODY_KEY.match(k))}
    num_block = max(blocks) + 1 if blocks else 0
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    num_feat, num_out = int(first.shape[0]), int(last.shape[0])
    ratio = int(first.shape[1]) // num_out
    scales = {1: 4, 4: 2, 16: 1}  # unshuffled input channels per output channel -> scale
    if ratio not in scales or int(first.shape[1]) % num_out:
        raise HeadgenError(f"{source}: conv_first takes {first.shape[1]} channels for {num_out} output channels; "
                           "an RRDBNet takes 1x, 4x or 16x its output channels (scale 4, 2 or 1)")
    grow = int(state["body.0.rdb1.conv1.weight"].shape[0]) if num_block else 32
    net = RRDBNet(num_out, num_out, scale=scales[ratio], num_feat=num_feat, num_block=num_block, num_grow_ch=grow)
    expected = set(net.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise HeadgenError(
            f"{source} does not match an RRDBNet with {num_block} blocks, {num_feat} features, growth {grow}: "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected "
            f"{unexpected[:4]}{'...' if len(unexpected) > 4 else ''}; is it a complete Real-ESRGAN generator file?"
        )
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:  # shapes that disagree inside an otherwise well-named file
        raise HeadgenError(f"{source}: the weights do not fit an RRDBNet ({' '.join(str(exc).split())[:300]})") from exc
    return net


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The generator's tensors from a ``.pth``/``.pt`` (``torch.load(weights_only=True)``; the public
    files nest them under ``params_ema``, training ones under ``params``) or ``.safetensors`` file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"Real-ESRGAN weight file {path} does not exist") from exc
    except Exception as exc:  # pickle, zip and safetensors header errors all mean a damaged file
        raise HeadgenError(
            f"cannot read {path} as a Real-ESRGAN weight file ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); it is damaged or not a weights file: download it again"
        ) from exc
    if isinstance(data, dict):
        for key in ("params_ema", "params"):  # the EMA generator is the one the authors release and test
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise HeadgenError(f"{path} holds no state dict of tensors (nor one under 'params_ema' / 'params')")
    # Files saved from nn.DataParallel prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in data.items()}


def weight_file(folder: Path, name: str) -> Path:
    """The one weight file in ``folder`` (or ``folder`` itself when it is a file)."""
    if folder.is_file():
        return folder
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise ModelNotFoundError(
            f"models.{name}: {folder} holds {what} weight files ({'/'.join(WEIGHT_SUFFIXES)}); put exactly one "
            f"Real-ESRGAN generator file there (e.g. RealESRGAN_x4plus.pth), or point models.{name}.local_dir "
            "at the file itself"
        )
    return found[0]


def load_realesrgan(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> RRDBNet:
    """An RRDBNet from a weight file, in eval mode, frozen, on ``device``."""
    net = rrdbnet_from_state_dict(read_state_dict(Path(path)), source=str(path))
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)


__all__ = ["RRDB", "RRDBNet", "ResidualDenseBlock", "load_realesrgan", "read_state_dict", "rrdbnet_from_state_dict",
           "weight_file"]
