"""Typed validation of plain config trees against dataclasses.

Recipes are YAML, but every node ends up as an instance of a dataclass whose annotations are the
schema. :func:`parse` walks a plain ``dict``/``list`` tree and the dataclass together and fails
with the full dotted path, the expected type and a close-match suggestion. Nodes that build a
registered part (``{type: sds, ...}``) are validated against that part's own ``Config``
dataclass, found through the registry, so a third-party plugin gets the same checks for free.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Literal, Union

from headgen.config.schedule import Schedule
from headgen.errors import ConfigError, did_you_mean
from headgen.registry import lookup


@dataclass
class Component:
    """A validated node that builds a registered part: ``{type: NAME, ...options}``."""

    kind: str
    type: str
    config: Any
    """An instance of the registered class's ``Config`` dataclass."""

    def build(self, *args: Any, **kwargs: Any) -> Any:
        return lookup(self.kind, self.type)(self.config, *args, **kwargs)


def component(kind: str, *, key: str = "type", default: Any = MISSING, doc: str = "") -> Any:
    """Declare a dataclass field holding a :class:`Component` of registry ``kind``.

    ``key`` names the discriminator (``type`` for parts, ``kind`` for stages). On a
    ``dict[str, Component]`` field the metadata applies to every value.
    """
    meta = {"component": kind, "key": key, "doc": doc}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: _deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def model_ref(default: str, *, doc: str = "") -> Any:
    """Declare a field naming a pretrained model (a key of the recipe's ``models:``); recipes are
    checked at load time so a typo fails before anything runs."""
    return field(default=default, metadata={"model_ref": True, "doc": doc})


def model_refs(obj: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (dotted path, model name) a parsed config refers to."""
    return [(where, name) for where, _, _, name in model_fields(obj, path)]


def model_fields(obj: Any, path: str = "") -> list[tuple[str, Any, str, str]]:
    """Every (dotted path, owning config, field name, model name) a parsed config refers to."""
    out: list[tuple[str, Any, str, str]] = []
    if isinstance(obj, Component):
        return model_fields(obj.config, path)
    if is_dataclass(obj) and not isinstance(obj, type):
        # A config may switch a model off (e.g. ssd's use_controlnet: false): it then names the
        # fields it leaves unused, so `prior: auto` does not fall back to the demo prior over them.
        unused = obj.unused_models() if hasattr(obj, "unused_models") else set()
        for f in fields(obj):
            value = getattr(obj, f.name)
            where = f"{path}.{f.name}" if path else f.name
            if f.name in unused:
                continue
            if f.metadata.get("model_ref"):
                names = value if isinstance(value, (list, tuple)) else [value]
                out += [(where, obj, f.name, n) for n in names if n]
            else:
                out += model_fields(value, where)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += model_fields(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += model_fields(v, f"{path}[{i}]")
    return out


def switch_off_model(obj: Any, model: str, path: str = "") -> list[tuple[str, str | None]]:
    """Switch off, in place, every part of ``obj`` that needs ``model`` and can do without it.

    A config says how through ``without_model(field) -> str | None``: it changes its own options
    so that ``field`` is no longer used and returns what it switched off, or returns None (as does a
    config without the method) when it cannot work without the model. Returns (dotted path of the
    field, what was switched off or None) for every field naming ``model``.
    """
    out: list[tuple[str, str | None]] = []
    for where, owner, name, ref in model_fields(obj, path):
        if ref != model:
            continue
        without = getattr(owner, "without_model", None)
        out.append((where, without(name) if without is not None else None))
    return out


def _deepcopy(x: Any) -> Any:
    import copy

    return copy.deepcopy(x)


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return {"str": "string", "int": "int", "float": "float", "bool": "bool"}.get(
            tp.__name__, tp.__name__
        )
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        if set(args) == {float, Schedule}:
            return "float or schedule [start_step, start_value, end_value, end_step]"
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "list [" + ", ".join(_type_name(a) for a in args) + "]"
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[1])}" if args else "mapping"
    return getattr(tp, "__name__", str(tp))


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_mapping(x: Any) -> bool:
    return isinstance(x, dict)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse(cls: type, node: Any, path: str = "") -> Any:
    """Validate ``node`` (plain dict/list/scalars) against dataclass ``cls``; return an instance."""
    if node is None:
        node = {}
    if not _is_mapping(node):
        raise ConfigError(f"{path or '<root>'}: expected a mapping for {cls.__name__}, got {_got(node)}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    for key in node:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            valid = ", ".join(names) if names else "(none)"
            raise ConfigError(
                f"unknown key '{where}'{did_you_mean(str(key), names)}; valid keys here: {valid}"
            )
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if not f.init:
            continue
        where = f"{path}.{f.name}" if path else f.name
        if f.name not in node:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise ConfigError(
                    f"{where}: missing required value ({_type_name(hints[f.name])})"
                )
            if f.metadata.get("component") and f.default_factory is not MISSING:  # type: ignore[misc]
                # A default written as a plain node ({type: builtin}) is validated like YAML.
                kwargs[f.name] = _convert(hints[f.name], f.default_factory(), where, f.metadata)  # type: ignore[misc]
            continue
        kwargs[f.name] = _convert(hints[f.name], node[f.name], where, f.metadata)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path or '<root>'}: {exc}") from exc


def _convert(tp: Any, value: Any, path: str, meta: Any = None) -> Any:
    meta = meta or {}
    if meta.get("component"):
        origin = typing.get_origin(tp)
        if origin is dict:
            if not _is_mapping(value):
                raise ConfigError(f"{path}: expected a mapping, got {_got(value)}")
            return {
                str(k): _component(meta["component"], meta["key"], v, f"{path}.{k}")
                for k, v in value.items()
            }
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{path}: expected a list of {meta['component']} nodes, got {_got(value)}")
            return [_component(meta["component"], meta["key"], v, f"{path}[{i}]") for i, v in enumerate(value)]
        if value is None and _is_optional(tp):
            return None
        return _component(meta["component"], meta["key"], value, path)
    return _convert_type(tp, value, path)


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def build(kind: str, node: Any, *args: Any, path: str = "", **kwargs: Any) -> Any:
    """Validate ``node`` (``{type: NAME, ...}``) and construct the registered part of ``kind``."""
    return _component(kind, "type", node, path or kind).build(*args, **kwargs)


def _component(kind: str, key: str, value: Any, path: str) -> Component:
    if isinstance(value, str):  # shorthand: `guidance: sds` means `{type: sds}`
        value = {key: value}
    if not _is_mapping(value):
        raise ConfigError(f"{path}: expected a mapping with '{key}: <{kind} name>', got {_got(value)}")
    if key not in value:
        raise ConfigError(f"{path}.{key}: missing required value (the {kind} to build)")
    name = value[key]
    if not isinstance(name, str):
        raise ConfigError(f"{path}.{key}: expected string, got {_got(name)}")
    cls = lookup(kind, name, path=f"{path}.{key}")
    rest = {k: v for k, v in value.items() if k != key}
    return Component(kind=kind, type=name, config=parse(config_class(cls), rest, path))


def config_class(cls: type) -> type:
    """The ``Config`` dataclass of a registered class (an empty one if it declares none)."""
    cfg = getattr(cls, "Config", None)
    if cfg is None:
        return _Empty
    if not is_dataclass(cfg):
        raise TypeError(f"{cls.__qualname__}.Config must be a dataclass")
    return cfg


@dataclass
class _Empty:
    pass


def _convert_type(tp: Any, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert_type(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        # An alternative that got past the shape check failed for a more specific reason.
        specific = [e for e in errors if not str(e).startswith(f"{path}: expected")]
        if specific:
            raise specific[0]
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_got(value)}")
    if origin is Literal:
        if value in args:
            return value
        hint = did_you_mean(str(value), [str(a) for a in args])
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_got(value)}{hint}")
    if tp is Schedule:
        if isinstance(value, (list, tuple)) and len(value) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            if not all(math.isfinite(v) for v in value):
                raise ConfigError(f"{path}: a schedule's values must be finite numbers, got {list(value)}")
            try:
                return Schedule(int(value[0]), float(value[1]), float(value[2]), int(value[3]))
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
        raise ConfigError(
            f"{path}: expected schedule [start_step, start_value, end_value, end_step], got {_got(value)}"
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected bool, got {_got(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected int, got {_got(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # YAML's .nan / .inf: no option of any part takes them
                raise ConfigError(f"{path}: must be a finite number, got {value}")
            return float(value)
        raise ConfigError(f"{path}: expected float, got {_got(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected string, got {_got(value)}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_got(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{path}: expected {_type_name(tp)} ({len(args)} items), got {_got(value)}"
                )
            return tuple(_convert_type(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert_type(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not _is_mapping(value):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_got(value)}")
        vt = args[1] if args else Any
        return {str(k): _convert_type(vt, v, f"{path}.{k}") for k, v in value.items()}
    if is_dataclass(tp):
        return parse(tp, value, path)
    raise TypeError(f"{path}: unsupported annotation {tp!r} in a config dataclass")


def to_plain(obj: Any) -> Any:
    """The plain (YAML-ready) form of a parsed config: the inverse of :func:`parse`."""
    if isinstance(obj, Component):
        key = "type"
        return {key: obj.type, **to_plain(obj.config)}
    if isinstance(obj, Schedule):
        return [obj.start_step, obj.start_value, obj.end_value, obj.end_step]
    if is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            plain = to_plain(value)
            if isinstance(value, Component) and f.metadata.get("key", "type") != "type":
                plain = {f.metadata["key"]: plain.pop("type"), **plain}
            if isinstance(value, dict) and f.metadata.get("key", "type") != "type":
                plain = {
                    k: {f.metadata["key"]: v.pop("type"), **v} if isinstance(v, dict) else v
                    for k, v in plain.items()
                }
            out[f.name] = plain
        return out
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) of a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for prev, node in zip(body, body[1:]):
            if (
                isinstance(prev, ast.AnnAssign)
                and isinstance(prev.target, ast.Name)
                and isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                docs[prev.target.id] = " ".join(node.value.value.split())
    for f in fields(cls):
        if f.metadata.get("doc"):
            docs[f.name] = f.metadata["doc"]
    return docs


def describe(cls: type, indent: str = "  ") -> str:
    """A config dataclass printed as documentation: one line per option."""
    hints = _hints(cls)
    docs = field_docs(cls)
    lines = []
    for f in fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if f.metadata.get("component"):
            tname = f"{f.metadata['component']} ({{{f.metadata['key']}: NAME, ...}})"
        else:
            tname = _type_name(tp)
        if f.default is not MISSING:
            default = f" = {to_plain(f.default)!r}"
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            default = f" = {to_plain(f.default_factory())!r}"  # type: ignore[misc]
        else:
            default = " (required)"
        doc = f"  # {docs[f.name]}" if f.name in docs else ""
        lines.append(f"{indent}{f.name}: {tname}{default}{doc}")
    return "\n".join(lines)


__all__ = [
    "Component",
    "component",
    "config_class",
    "describe",
    "field_docs",
    "parse",
    "to_plain",
]
