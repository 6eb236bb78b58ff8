"""Exporters (kind ``exporter``): the files an export stage writes into ``assets/``."""

from headgen.export import animation, gltf, obj, preview  # noqa: F401
