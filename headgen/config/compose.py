"""Composing a recipe: ``extends`` fragments, the recipe itself, then ``key=value`` overrides.

The result is a plain, fully resolved ``dict`` (OmegaConf interpolations like
``${models.sd15}`` resolved), ready for typed validation by :mod:`headgen.config.recipe`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from headgen.errors import ConfigError, did_you_mean

# Keys whose value names the registered class to build. `head=ict-facekit` on the command line
# replaces the whole node, since the old options belong to the old type.
DISCRIMINATORS = ("type", "kind")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def config_dirs() -> list[Path]:
    """Where ``extends`` fragments are looked up: ``$HEADGEN_CONFIG_PATH`` entries, then ``configs/``."""
    extra = [Path(p) for p in os.environ.get("HEADGEN_CONFIG_PATH", "").split(os.pathsep) if p]
    return [*extra, repo_root() / "configs"]


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError carries line/column in its message
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc
    if cfg is None:
        return OmegaConf.create({})
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping at the top level")
    return cfg


def find_recipe(path: str | Path) -> Path:
    p = Path(path)
    candidates = [p] if p.is_absolute() else [p, repo_root() / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    methods = sorted(str(m.relative_to(repo_root())) for m in (repo_root() / "methods").glob("*.yaml"))
    raise ConfigError(
        f"recipe file not found: {path}{did_you_mean(str(path), methods)}; "
        f"available recipes: {', '.join(methods) or '(none)'}"
    )


def _find_fragment(name: str, recipe_dir: Path, chain: list[Path]) -> Path:
    for base in [*config_dirs(), recipe_dir]:
        candidate = base / name
        if candidate.is_file():
            return candidate.resolve()
    where = " -> ".join(str(c) for c in chain)
    known = sorted(
        str(f.relative_to(d)) for d in config_dirs() if d.is_dir() for f in d.rglob("*.yaml")
    )
    raise ConfigError(
        f"extends: fragment '{name}' not found (from {where}){did_you_mean(name, known)}; "
        f"fragments are looked up under: {', '.join(str(d) for d in config_dirs())}"
    )


def _load_with_extends(path: Path, chain: list[Path]) -> DictConfig:
    if path in chain:
        cycle = " -> ".join(str(c) for c in [*chain, path])
        raise ConfigError(f"extends: cycle between fragments: {cycle}")
    chain = [*chain, path]
    cfg = _load_yaml(path)
    extends = cfg.pop("extends", None)
    if extends is None:
        return cfg
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, (list, ListConfig)) or not all(isinstance(e, str) for e in extends):
        raise ConfigError(f"{path}: extends must be a list of fragment paths under configs/")
    parts = [_load_with_extends(_find_fragment(e, path.parent, chain), chain) for e in extends]
    return OmegaConf.merge(*parts, cfg)  # type: ignore[return-value]


LITERAL_KEYS = ("prompt", "negative_prompt", "edit_prompt")
"""Text given on the command line for these keys is taken as it is: no YAML comment (``#``), no
``${...}`` interpolation, no type conversion (one pair of surrounding quotes is removed)."""


def _literal(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text.replace("\\${", "\\\\${").replace("${", "\\${")  # OmegaConf's escape of an interpolation


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``key=value`` strings to (dotted key, YAML-parsed value) pairs (the prompts' values literally)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override '{item}' is not of the form key=value (e.g. stages.carve.steps=50 or prompt=\"...\")"
            )
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        if key in LITERAL_KEYS:
            out.append((key, _literal(raw)))
            continue
        try:
            value = OmegaConf.from_dotlist([item])
            node: Any = OmegaConf.select(value, key, throw_on_missing=True)  # also a.b[0] keys
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override '{item}': {' '.join(str(exc).split())}") from exc
        if isinstance(node, (DictConfig, ListConfig)):
            node = OmegaConf.to_container(node)
        out.append((key, node))
    return out


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    stages = cfg.get("stages") or {}
    for key, value in parse_overrides(overrides):
        parts = key.split(".")
        if parts[0] == "stages" and len(parts) > 1 and parts[1] not in stages:
            raise ConfigError(
                f"override '{key}': unknown stage '{parts[1]}'{did_you_mean(parts[1], stages)}; "
                f"this recipe's stages: {', '.join(stages) or '(none)'}"
            )
        current = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if (
            isinstance(current, DictConfig)
            and isinstance(value, str)
            and any(d in current for d in DISCRIMINATORS)
        ):
            disc = next(d for d in DISCRIMINATORS if d in current)
            value = {disc: value}
            OmegaConf.update(cfg, key, value, merge=False)
            continue
        try:
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override '{key}': {exc}") from exc
    return cfg


def compose(recipe: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load ``recipe`` with its fragments, apply overrides and resolve interpolations."""
    path = find_recipe(recipe)
    cfg = _load_with_extends(path, [])
    cfg = apply_overrides(cfg, list(overrides or []))
    return resolve(cfg)


def resolve(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        msg = getattr(exc, "msg", None) or str(exc)
        raise ConfigError(f"{key + ': ' if key else ''}cannot resolve value: {msg}") from exc
    assert isinstance(plain, dict)
    return plain  # type: ignore[return-value]
