"""Recipes: composition (``extends`` + overrides), typed validation and schedules."""

from headgen.config.schedule import Scalar, Schedule, value_at
from headgen.config.typed import Component, build, component, describe, parse

__all__ = ["Component", "Scalar", "build", "Schedule", "component", "describe", "parse", "value_at"]
