"""The rasterizer backend interface: nvdiffrast's four differentiable ops.

Conventions (every backend follows them, so renders do not depend on the backend)
---------------------------------------------------------------------------------
* ``pos_clip`` holds clip-space vertex positions ``(X, Y, Z, W)``; NDC is ``(X, Y, Z) / W``.
* Output images are ``[B, H, W, C]`` with **row 0 at the top**: NDC ``y = +1`` is the top edge of
  row 0 and ``y = -1`` the bottom edge of row ``H - 1``; NDC ``x = -1`` is the left edge of column
  0. Pixel centres sit at ``(col + 0.5, row + 0.5)``. (nvdiffrast itself puts row 0 at ``y = -1``;
  its backend here flips rows to match.)
* ``rast[..., 0:2] = (u, v)``: perspective-correct barycentrics such that an attribute is
  ``u * a[t0] + v * a[t1] + (1 - u - v) * a[t2]``; ``rast[..., 2] = z / w`` (NDC depth, smaller is
  nearer); ``rast[..., 3] = triangle_id + 1`` as a float, 0 where no triangle covers the pixel.
  With a batch of positions ``[B, V, 4]`` the triangle ids index ``tri`` for every batch element.
* Both faces of a triangle are drawn (no culling); the nearest surface wins. ``cull_back=True``
  is a speed hint for closed surfaces seen from outside (a head): the torch backend then skips
  triangles facing away from the camera (counter-clockwise is the front); nvdiffrast draws both
  faces anyway. Either way a closed surface's image is the same up to silhouette pixels.
* Textures are ``[B, h, w, C]`` or ``[h, w, C]`` stored top-down (row 0 = top). ``uv = (0, 0)`` is
  the bottom-left corner of the image and ``(1, 1)`` the top-right (OBJ convention), texel centres
  at ``((c + 0.5) / w, 1 - (r + 0.5) / h)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from torch import Tensor

from headgen.errors import HeadgenError

BackendName = Literal["auto", "torch", "nvdiffrast"]
BACKEND_NAMES: tuple[str, ...] = ("auto", "torch", "nvdiffrast")

NVDIFFRAST_INSTALL_HINT = (
    "install it from source with `pip install git+https://github.com/NVlabs/nvdiffrast` "
    "(needs a CUDA toolkit), or use `backend: torch`"
)


class RasterBackend(ABC):
    """Differentiable rasterization: rasterize, interpolate, texture, antialias."""

    name: str = "base"

    @abstractmethod
    def rasterize(self, pos_clip: Tensor, tri: Tensor, resolution: tuple[int, int],
                  cull_back: bool = False) -> tuple[Tensor, Tensor | None]:
        """Rasterize triangles ``tri`` [F,3] of clip-space vertices [B,V,4] (or [V,4], B = 1).

        Returns ``(rast [B,H,W,4], rast_db or None)``; see the module docstring for the layout.
        ``rast`` is differentiable w.r.t. ``pos_clip`` through ``u``, ``v`` and ``z/w``.
        """

    @abstractmethod
    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        """Per-pixel attributes [B,H,W,C] from vertex attributes [B,V,C], [1,V,C] or [V,C].

        Zero where no triangle covers the pixel. ``tri`` may differ from the rasterized one as long
        as it has the same faces (e.g. separate UV indices).
        """

    @abstractmethod
    def texture(
        self,
        tex: Tensor,
        uv: Tensor,
        filter_mode: str = "linear",
        boundary_mode: str = "wrap",
    ) -> Tensor:
        """Sample ``tex`` [B,h,w,C] or [h,w,C] at ``uv`` [B,H,W,2] -> [B,H,W,C].

        ``filter_mode``: ``'linear'`` (bilinear) or ``'nearest'``. ``boundary_mode``: ``'wrap'``,
        ``'clamp'`` (to the centres of the edge texels) or ``'zero'``.
        """

    @abstractmethod
    def antialias(self, color: Tensor, rast: Tensor, pos_clip: Tensor, tri: Tensor) -> Tensor:
        """Blend colours across silhouette edges; gives those edges gradients w.r.t. positions."""


def batch_positions(pos_clip: Tensor) -> Tensor:
    """``pos_clip`` as [B,V,4]; a single [V,4] becomes a batch of one."""
    if pos_clip.dim() == 2:
        pos_clip = pos_clip.unsqueeze(0)
    if pos_clip.dim() != 3 or pos_clip.shape[-1] != 4:
        raise HeadgenError(f"pos_clip must be [B,V,4] or [V,4], got {tuple(pos_clip.shape)}")
    return pos_clip


def check_tri(tri: Tensor) -> None:
    if tri.dim() != 2 or tri.shape[-1] != 3 or tri.dtype.is_floating_point:
        raise HeadgenError(f"tri must be an integer [F,3] tensor, got {tuple(tri.shape)} {tri.dtype}")
