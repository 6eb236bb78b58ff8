"""Renderers: the mesh rasterizer (``mesh_renderer``), with its backends under ``raster``."""
