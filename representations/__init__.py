"""Representation plugins: the learnable head (parametric mesh, DMTet, NeRF)."""

from representations import parametric_mesh  # noqa: F401  (registers its parts)
from representations.base import Representation

__all__ = ["Representation"]
