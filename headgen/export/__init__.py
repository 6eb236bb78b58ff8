"""Exporters (kind ``exporter``): the files an export stage writes into ``assets/``."""

from headgen.export import obj, preview  # noqa: F401
