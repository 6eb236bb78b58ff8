"""Representation plugins: the learnable head (parametric mesh, DMTet, NeRF)."""

from representations.base import Representation

__all__ = ["Representation"]
