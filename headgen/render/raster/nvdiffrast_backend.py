"""nvdiffrast backend (CUDA), adapted to the row-0-at-top and v-up texture conventions.

nvdiffrast writes image row 0 at NDC ``y = -1`` (the bottom) and samples texture row 0 at
``v = 0``. This wrapper flips image rows after rasterization (and back before antialiasing, whose
kernel works in nvdiffrast's own pixel frame) and passes ``1 - v`` to texture lookups, so results
match :mod:`headgen.render.raster.base` and the torch backend. ``interpolate`` is per pixel, so it
takes the flipped ``rast`` as it is. nvdiffrast is imported when this backend is constructed,
never at module import.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.render.raster.base import NVDIFFRAST_INSTALL_HINT, RasterBackend, batch_positions, check_tri


def _import_nvdiffrast() -> Any:
    try:
        import nvdiffrast.torch as dr
    except ImportError as exc:
        raise HeadgenError(
            f"rasterizer backend 'nvdiffrast' is not installed ({exc}); {NVDIFFRAST_INSTALL_HINT}"
        ) from exc
    return dr


class NvdiffrastBackend(RasterBackend):
    """nvdiffrast's CUDA rasterizer behind the common interface."""

    name = "nvdiffrast"

    def __init__(self, device: torch.device | str = "cuda") -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise HeadgenError(f"rasterizer backend 'nvdiffrast' needs a CUDA device, got '{self.device}'")
        self.dr = _import_nvdiffrast()
        self.ctx = self.dr.RasterizeCudaContext(device=self.device)
        self._topology: tuple[tuple, Tensor, Any] | None = None

    @staticmethod
    def _tri32(tri: Tensor, device: torch.device) -> Tensor:
        check_tri(tri)
        return tri.to(device=device, dtype=torch.int32).contiguous()

    def rasterize(self, pos_clip: Tensor, tri: Tensor, resolution: tuple[int, int],
                  cull_back: bool = False) -> tuple[Tensor, Tensor | None]:  # draws both faces (a hint)
        pos = batch_positions(pos_clip).float().contiguous()
        rast, rast_db = self.dr.rasterize(
            self.ctx, pos, self._tri32(tri, pos.device), resolution=[int(resolution[0]), int(resolution[1])]
        )
        # Row flip; d/dY changes sign because our rows grow downwards.
        rast_db = rast_db.flip(1) * rast_db.new_tensor([1.0, -1.0, 1.0, -1.0])
        return rast.flip(1), rast_db

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        if attr.dim() == 2:
            attr = attr.unsqueeze(0)
        out, _ = self.dr.interpolate(attr.float().contiguous(), rast.contiguous(), self._tri32(tri, rast.device))
        return out

    def texture(
        self,
        tex: Tensor,
        uv: Tensor,
        filter_mode: str = "linear",
        boundary_mode: str = "wrap",
    ) -> Tensor:
        if tex.dim() == 3:
            tex = tex.unsqueeze(0)
        if filter_mode not in ("linear", "nearest"):
            raise NotImplementedError(
                f"texture filter_mode '{filter_mode}' (mipmapping) is not exposed by this interface; "
                "use 'linear' or 'nearest'"
            )
        if boundary_mode not in ("wrap", "clamp", "zero"):
            raise NotImplementedError(f"texture boundary_mode '{boundary_mode}'; use 'wrap', 'clamp' or 'zero'")
        uv_nv = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1).float().contiguous()
        return self.dr.texture(tex.float().contiguous(), uv_nv, filter_mode=filter_mode, boundary_mode=boundary_mode)

    def _topology_hash(self, tri: Tensor, tri32: Tensor) -> Any:
        # Keyed on the caller's tensor (tri32 may be a fresh int32 copy on every call); the entry
        # holds it so its storage cannot be reused under the same key.
        key = (tri.data_ptr(), tuple(tri.shape), tri._version, tri.dtype, tri.device)
        if self._topology is not None and self._topology[0] == key:
            return self._topology[2]
        topo = self.dr.antialias_construct_topology_hash(tri32)
        self._topology = (key, tri, topo)
        return topo

    def antialias(self, color: Tensor, rast: Tensor, pos_clip: Tensor, tri: Tensor) -> Tensor:
        pos = batch_positions(pos_clip).float().contiguous()
        if pos.shape[0] == 1 and color.shape[0] > 1:
            pos = pos.expand(color.shape[0], -1, -1).contiguous()
        tri32 = self._tri32(tri, pos.device)
        out = self.dr.antialias(
            color.float().flip(1).contiguous(),
            rast.flip(1).contiguous(),
            pos,
            tri32,
            topology_hash=self._topology_hash(tri, tri32),
        )
        return out.flip(1)
