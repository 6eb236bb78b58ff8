"""Stage kinds: ``optimize`` (a generic Lightning fit), ``select``, ``convert`` and ``export``
(plain code, no gradient). Importing this package registers them."""

from headgen.stages import convert, export, load, optimize, select  # noqa: F401
from headgen.stages.base import Stage

__all__ = ["Stage"]
