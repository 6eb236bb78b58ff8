"""Choosing a rasterizer backend: ``auto`` (nvdiffrast on CUDA when importable, else PyTorch),
``torch`` or ``nvdiffrast``. Apart from :mod:`headgen.render.raster.base` so the backends, which
subclass the base, are never imported by it."""

from __future__ import annotations

import torch

from headgen.errors import HeadgenError, did_you_mean
from headgen.render.raster.base import BACKEND_NAMES, NVDIFFRAST_INSTALL_HINT, RasterBackend

_BACKENDS: dict[tuple[str, str], RasterBackend] = {}


def _nvdiffrast_importable() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


def get_backend(name: str = "auto", device: torch.device | str | None = None) -> RasterBackend:
    """The rasterizer backend ``name`` for ``device`` (default CPU).

    ``auto`` picks nvdiffrast when ``import nvdiffrast.torch`` works and the device is CUDA, and
    the pure-PyTorch backend otherwise. Asking for ``nvdiffrast`` explicitly when it is not
    installed (or on a non-CUDA device) is an error.
    """
    dev = torch.device(device if device is not None else "cpu")
    if name not in BACKEND_NAMES:
        raise HeadgenError(
            f"unknown rasterizer backend '{name}'{did_you_mean(name, BACKEND_NAMES)}; "
            f"choose one of {', '.join(BACKEND_NAMES)}"
        )
    if name == "auto":
        name = "nvdiffrast" if dev.type == "cuda" and _nvdiffrast_importable() else "torch"
    elif name == "nvdiffrast":
        if not _nvdiffrast_importable():
            raise HeadgenError(f"rasterizer backend 'nvdiffrast' is not installed; {NVDIFFRAST_INSTALL_HINT}")
        if dev.type != "cuda":
            raise HeadgenError(
                f"rasterizer backend 'nvdiffrast' needs a CUDA device, but the renderer runs on '{dev}'; "
                "use `backend: torch` (or `auto`) on the CPU"
            )
    key = (name, str(dev))
    backend = _BACKENDS.get(key)
    if backend is None:
        if name == "torch":
            from headgen.render.raster.torch_backend import TorchRasterBackend

            backend = TorchRasterBackend()
        else:
            from headgen.render.raster.nvdiffrast_backend import NvdiffrastBackend

            backend = NvdiffrastBackend(dev)
        _BACKENDS[key] = backend
    return backend
