"""The registry: every part (stage, representation, renderer, guidance, ...) is a class
registered under a kind and a name, and built from a YAML node validated against the class's own
``Config`` dataclass (:func:`headgen.config.build`).

Third-party parts need no edit to any core file: a module that calls :func:`register` is
imported through the ``headgen.plugins`` entry-point group or ``launch.py --plugin module``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import traceback
from collections.abc import Callable
from typing import TypeVar

from headgen.errors import HeadgenError, RegistryError, did_you_mean

T = TypeVar("T", bound=type)

ENTRY_POINT_GROUP = "headgen.plugins"

# Modules whose import registers the built-in parts. Heavy optional backends (nvdiffrast,
# tiny-cuda-nn) are imported lazily inside those modules, never here.
BUILTIN_MODULES: tuple[str, ...] = (
    "headgen.stages",
    "headgen.camera_sampling",
    "headgen.render.mesh_renderer",
    "headgen.render.volume",
    "headgen.heads",
    "headgen.inputs",
    "headgen.export",
    "guidance",
    "selection",
    "representations",
    "converters",
)

_REGISTRY: dict[str, dict[str, type]] = {}
_loaded_builtins = False


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: register ``cls`` as ``name`` of ``kind`` (e.g. ``("guidance", "sds")``)."""

    def deco(cls: T) -> T:
        table = _REGISTRY.setdefault(kind, {})
        old = table.get(name)
        if old is not None and _qualname(old) != _qualname(cls):
            raise RegistryError(
                f"{kind} '{name}' is registered twice: by {_qualname(old)} and {_qualname(cls)}; "
                "rename one of them"
            )
        table[name] = cls
        cls.registered_kind = kind  # type: ignore[attr-defined]
        cls.registered_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def lookup(kind: str, name: str, path: str = "") -> type:
    """The class registered as ``name`` of ``kind``; a clear error listing the known names."""
    load_builtins()
    table = _REGISTRY.get(kind)
    if not table:
        raise RegistryError(
            f"unknown kind '{kind}'{did_you_mean(kind, _REGISTRY)}; kinds: {', '.join(sorted(_REGISTRY))}"
        )
    if name not in table:
        where = f"{path}: " if path else ""
        raise RegistryError(
            f"{where}unknown {kind} '{name}'{did_you_mean(name, table)}; "
            f"known {kind} names: {', '.join(sorted(table))}"
        )
    return table[name]


def registered() -> dict[str, dict[str, type]]:
    """All registered parts: ``{kind: {name: class}}``, sorted."""
    load_builtins()
    return {k: dict(sorted(v.items())) for k, v in sorted(_REGISTRY.items())}


def summary_line(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"


def load_builtins() -> None:
    global _loaded_builtins
    if _loaded_builtins:
        return
    _loaded_builtins = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


PLUGIN_MODULES: set[str] = set()
"""Top-level names of the modules loaded as plugins (an error raised in their code is reported as theirs)."""


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import plugins from the ``headgen.plugins`` entry points and from ``modules``.

    An entry point may name a module (imported for its ``register`` calls) or a callable
    (called with no arguments). Returns the names loaded, for logging. A plugin that fails to load
    is a :class:`HeadgenError` naming it and the line that raised.
    """
    load_builtins()
    loaded = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        PLUGIN_MODULES.add(ep.value.split(":")[0].split(".")[0])
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
        except HeadgenError:
            raise
        except Exception as exc:  # a broken third-party plugin must say which one it is
            raise HeadgenError(f"plugin entry point '{ep.name}' ({ep.value}) failed to load: "
                               f"{type(exc).__name__}: {exc}{_at(exc)}") from exc
        loaded.append(ep.value)
    for module in modules:
        PLUGIN_MODULES.add(module.split(".")[0])
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                raise HeadgenError(
                    f"--plugin {module}: module not found; it must be importable "
                    "(installed, or its folder on PYTHONPATH / the current directory)"
                ) from exc
            raise HeadgenError(f"--plugin {module}: importing it failed: {exc}{_at(exc)}") from exc
        except HeadgenError:
            raise
        except Exception as exc:  # SyntaxError, an error raised at import time, ...
            raise HeadgenError(
                f"--plugin {module}: importing it failed: {type(exc).__name__}: {exc}{_at(exc)}"
            ) from exc
        loaded.append(module)
    return loaded


def _at(exc: BaseException) -> str:
    """`` (at file:line, in function)`` of where ``exc`` was raised (for a SyntaxError, the bad line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno}, in {frames[-1].name})" if frames else ""


def plugin_origin(exc: BaseException) -> str | None:
    """Where in a plugin's code ``exc`` was raised (innermost plugin frame), or None when no plugin code
    is on its traceback (then it is headgen's own bug and keeps its traceback)."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".")[0] in PLUGIN_MODULES:
            found = f"plugin {module}, {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno} in {tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    return found
