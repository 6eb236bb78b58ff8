"""Representation plugins: the learnable head (parametric mesh, DMTet, NeRF)."""

from representations import (  # noqa: F401  (registers them)
    convert_nerf_dmtet,
    dmtet,
    dreamface_pbr,
    nerf,
    parametric_mesh,
)
from representations.base import Representation

__all__ = ["Representation"]
