"""Image and video writing shared by exporters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from headgen.rundir import atomic_write


def to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """[H,W,C] float in [0,1] (tensor or array) -> uint8 array; uint8 input is returned as is."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return image
    if isinstance(image, Tensor):
        image = image.detach().float().cpu().numpy()
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: Path, image: Tensor | np.ndarray) -> Path:
    import imageio.v3 as iio

    data = to_uint8(image)
    if data.ndim == 3 and data.shape[-1] == 1:  # single-channel maps (specular) as greyscale PNGs
        data = data[..., 0]
    return atomic_write(path, lambda p: iio.imwrite(p, data, extension=".png"))


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    """Write an MP4 through imageio's ffmpeg plugin, or a GIF when ffmpeg is unavailable.

    Returns the path actually written (the suffix tells which).
    """
    import imageio.v3 as iio

    try:
        import imageio_ffmpeg  # noqa: F401

        def write_mp4(p: Path) -> None:
            iio.imwrite(p, np.stack(frames), extension=".mp4", fps=fps, codec="libx264", macro_block_size=8)

        return atomic_write(path.with_suffix(".mp4"), write_mp4)
    except ImportError:
        gif = path.with_suffix(".gif")
        duration = 1000 / fps
        data = np.stack(frames)
        return atomic_write(gif, lambda p: iio.imwrite(p, data, extension=".gif", duration=duration, loop=0))


def grid(images: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of equally sized uint8 images -> one image."""
    return np.concatenate([np.concatenate(row, axis=1) for row in images], axis=0)


__all__ = ["grid", "to_uint8", "write_png", "write_video"]
