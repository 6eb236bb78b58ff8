"""Differentiable mesh rasterization behind one interface (nvdiffrast's four ops).

``get_backend('auto' | 'torch' | 'nvdiffrast', device)`` returns a :class:`RasterBackend`. The
pure-PyTorch backend runs everywhere; the nvdiffrast one is imported only when chosen.
"""

from headgen.render.raster.base import BACKEND_NAMES, RasterBackend
from headgen.render.raster.select import get_backend

__all__ = ["BACKEND_NAMES", "RasterBackend", "get_backend"]
