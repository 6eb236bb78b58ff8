"""The bench config (``configs/bench/*.yaml``): which methods, prompts and seeds to run, and how.

Validated with :func:`headgen.config.parse` like a recipe, so a typo fails with its dotted path.
Prompt sets are files with one prompt per line (``#`` comments and blank lines ignored) or a YAML
list of strings (``.yaml``/``.yml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from headgen.config.recipe import ModelSpec
from headgen.config.typed import parse
from headgen.errors import ConfigError

BUILTIN_PROMPTS = "configs/bench/prompts/heads.txt"
"""The built-in prompt set (HeadSculpt / HeadArtist-style subjects), relative to the repository."""


@dataclass
class MethodEntry:
    """One column of the grid: a recipe and the overrides it runs with."""

    recipe: str
    """Recipe YAML, e.g. methods/dreamface.yaml (relative to the working directory or the repository)."""
    overrides: list[str] = field(default_factory=list)
    """Recipe overrides (key=value) for every run of this method, e.g. reduced steps. Nested lists are
    flattened, so methods can share a list through a YAML alias: [*reduced, stages.x.steps=10]."""


@dataclass
class BenchConfig:
    """A grid of methods x prompts x seeds, each a normal run, scored and summarised."""

    name: str
    """Bench name; results go to <output_dir>/bench/<name>@<YYYYmmdd-HHMMSS>/."""
    methods: dict[str, MethodEntry] = field(default_factory=dict)
    """Method label -> {recipe, overrides}; the label names the method in every table and plot."""
    prompts: list[str] = field(default_factory=list)
    """Prompts to run; combined with prompt_file when both are given (the list first)."""
    prompt_file: str | None = None
    """A prompt set file: one prompt per line, or a YAML list (.yaml/.yml)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds to run for every (method, prompt)."""
    prior: Literal["auto", "pretrained", "demo"] = "demo"
    """Prior of every run (set last, over the method overrides)."""
    device: str = "auto"
    """Device of every run (auto, cpu, cuda, cuda:N); the ray launcher gives each run one GPU when cuda."""
    output_dir: str = "outputs"
    """Root folder: the bench folder is <output_dir>/bench/<name>@<time>, its runs under runs/."""
    clip_models: list[str] = field(default_factory=lambda: ["clip_b32", "clip_l14"])
    """CLIP models (keys of configs/models.yaml or of models:) scored when present on disk; others are skipped."""
    demo_clip: bool = True
    """Under the demo prior also report the demo prior's CLIP analogue (clip_demo; not a text model)."""
    models: dict[str, ModelSpec] = field(default_factory=dict)
    """Extra or replacement model entries for clip_models (merged over configs/models.yaml)."""
    eval_resolution: int = 224
    """Pixel size of the evaluation-orbit renders scored by CLIP."""
    gt_resolution: int = 128
    """Pixel size of the demo prior's ground-truth renders (128 = the values summary.json records)."""
    launcher: Literal["local", "ray"] = "local"
    """local: runs one after another in this process; ray: one task per run on a Ray cluster."""
    workers: int = 1
    """Ray: CPUs of the local Ray instance (concurrent runs on CPU); ignored by the local launcher."""
    ray_address: str | None = None
    """Ray: address of an existing cluster (e.g. ray://head:10001 or auto); null starts a local instance."""


def load_bench_config(path: str | Path, **updates: Any) -> BenchConfig:
    """Read and validate a bench YAML; ``updates`` (non-None values) replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench config {path} not found (see configs/bench/smoke.yaml for an example)")
    try:
        node = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"bench config {path}: not valid YAML ({exc})") from exc
    if not isinstance(node, dict):
        raise ConfigError(f"bench config {path}: expected a mapping at the top level")
    node.update({k: v for k, v in updates.items() if v is not None})
    for entry in (node.get("methods") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("overrides"), list):
            entry["overrides"] = _flatten(entry["overrides"])
    cfg = parse(BenchConfig, node, path=str(path))
    base = path.parent
    if cfg.prompt_file:
        cfg.prompts = list(cfg.prompts) + read_prompts(_resolve(cfg.prompt_file, base))
    check(cfg, str(path))
    return cfg


def _flatten(items: list) -> list:
    """One list from nested lists (YAML aliases of shared override lists), order kept."""
    out: list = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _resolve(name: str, base: Path) -> Path:
    """A path as given (relative to the working directory), else relative to the config, else the repo."""
    from headgen.config.compose import repo_root

    for candidate in (Path(name), base / name, repo_root() / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"prompt_file: {name} not found (relative to the working directory, {base} or the repository)")


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a prompt set file: one per line (``#`` comments, blank lines skipped) or a YAML list."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text)
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ConfigError(f"prompt_file {path}: a YAML prompt set must be a list of strings")
        prompts = [p.strip() for p in data]
    else:
        prompts = [line.strip() for line in text.splitlines()]
        prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts or any(not p for p in prompts):
        raise ConfigError(f"prompt_file {path}: holds no prompt (or an empty one)")
    return prompts


def check(cfg: BenchConfig, where: str) -> None:
    if not cfg.methods:
        raise ConfigError(f"{where}: methods: name at least one method, e.g. {{dreamface: {{recipe: "
                          "methods/dreamface.yaml}}")
    if not cfg.prompts:
        raise ConfigError(f"{where}: give prompts: [...] or prompt_file: (e.g. {BUILTIN_PROMPTS})")
    if not cfg.seeds:
        raise ConfigError(f"{where}: seeds: give at least one seed")
    if len(set(cfg.prompts)) != len(cfg.prompts) or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"{where}: prompts and seeds must not repeat")
    if cfg.workers < 1:
        raise ConfigError(f"{where}: workers must be >= 1, got {cfg.workers}")
    for label in cfg.methods:
        if not label or "/" in label or label.startswith("."):
            raise ConfigError(f"{where}: methods: '{label}' is not a usable method label")


__all__ = ["BUILTIN_PROMPTS", "BenchConfig", "MethodEntry", "load_bench_config", "read_prompts"]
