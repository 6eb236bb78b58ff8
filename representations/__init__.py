"""Representation plugins: the learnable head (parametric mesh, DMTet, NeRF)."""

from representations import dmtet, nerf, parametric_mesh  # noqa: F401  (registers them)
from representations.base import Representation

__all__ = ["Representation"]
