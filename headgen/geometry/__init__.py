"""Geometry containers shared by representations, renderers and export."""

from headgen.geometry.mesh import Mesh, SurfaceGeometry

__all__ = ["Mesh", "SurfaceGeometry"]
