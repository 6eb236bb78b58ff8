"""``python launch.py --models [RECIPE] [key=value ...]``: which pretrained models the recipes use,
whether they are on disk (Hugging Face cache or ``local_dir``), their size there, and the command
that gets the missing ones. Looks in the local cache only; never downloads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headgen.config.compose import compose, repo_root
from headgen.config.recipe import ModelSpec, validate
from headgen.errors import ConfigError
from headgen.models.zoo import local_path
from headgen.prior.choice import REQUIRED_COMPONENTS, available, models_used

# Placeholders so that recipes which need them (editing: a source run; prompt-less recipes) compose.
PLACEHOLDERS = ["source=RUN_DIR", "prompt=placeholder"]


@dataclass(frozen=True)
class ModelRow:
    name: str
    spec: ModelSpec
    used_by: tuple[str, ...]
    path: Path | None
    size_bytes: int

    @property
    def on_disk(self) -> bool:
        return self.path is not None


def recipe_models(recipe: str | Path, overrides: list[str] = ()) -> tuple[str, dict[str, ModelSpec], list[str]]:
    """(the recipe's name, its model table, the models its stages use)."""
    cfg = validate(compose(recipe, [*PLACEHOLDERS, *overrides]))
    return cfg.name, dict(cfg.models), models_used(cfg)


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (Hub cache snapshots are links to blobs: their targets count)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inventory(recipes: list[str | Path] | None = None, overrides: list[str] = ()) -> list[ModelRow]:
    """One row per model used by ``recipes`` (default: every recipe in methods/), sorted by name."""
    paths = recipes or sorted((repo_root() / "methods").glob("*.yaml"))
    specs: dict[str, ModelSpec] = {}
    users: dict[str, list[str]] = {}
    for recipe in paths:
        name, table, used = recipe_models(recipe, overrides)
        for model in used:
            specs.setdefault(model, table[model])
            users.setdefault(model, []).append(name)
    users = {model: sorted(set(names)) for model, names in users.items()}
    rows = []
    for model, spec in sorted(specs.items()):
        # "On disk" means what a run would accept: every component the model's kind needs.
        path = local_path(spec) if available(spec) else None
        if path is not None and spec.subfolder:
            path = path / spec.subfolder
        rows.append(ModelRow(model, spec, tuple(users[model]), path, folder_size(path) if path else 0))
    return rows


def get_command(spec: ModelSpec, name: str) -> str:
    """The shell command that downloads ``spec`` (run on a machine with network access)."""
    if not spec.public:
        return f"not published: train or obtain your own, then set models.{name}.local_dir=/path/to/it"
    prefix = f"{spec.subfolder}/" if spec.subfolder else ""
    if spec.kind == "diffusers":
        # Only the components a run loads: pipeline repositories also hold multi-GB single-file
        # checkpoints at their root that from_pretrained never reads.
        parts = ["model_index.json", *(f"{c}/*" for c in REQUIRED_COMPONENTS["diffusers"])]
        include = " --include " + " ".join(f"'{prefix}{p}'" for p in parts)
    else:
        include = f" --include '{prefix}*'" if prefix else ""
    revision = f" --revision {spec.revision}" if spec.revision else ""
    target = f" --local-dir {spec.local_dir}" if spec.local_dir else ""
    return f"hf download {spec.hub_id}{revision}{include}{target}"


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GB"


def models_text(recipe: str | None = None, overrides: list[str] = ()) -> str:
    """What ``--models`` prints."""
    try:
        rows = inventory([recipe] if recipe else None, overrides)
    except ConfigError as exc:
        raise ConfigError(f"--models {recipe}: {exc}") from exc
    if not rows:
        return f"{recipe or 'the recipes'}: no pretrained model is used (the run needs no weights)"
    lines = []
    for row in rows:
        where = f"on disk, {human_size(row.size_bytes)}: {row.path}" if row.on_disk else "NOT on disk"
        if not row.on_disk and row.spec.local_dir:
            where += f" (models.{row.name}.local_dir={row.spec.local_dir} holds no complete copy)"
        lines.append(f"{row.name}  ({row.spec.kind}: {row.spec.hub_id}"
                     f"{'/' + row.spec.subfolder if row.spec.subfolder else ''})"
                     + ("  optional" if row.spec.optional else ""))
        lines.append(f"    used by: {', '.join(row.used_by)}")
        lines.append(f"    {where}")
        if not row.on_disk:
            lines.append(f"    get it:  {get_command(row.spec, row.name)}")
    missing = [r.name for r in rows if not r.on_disk]
    total = sum(r.size_bytes for r in rows)
    tail = ""
    if missing:
        optional = [r.name for r in rows if not r.on_disk and r.spec.optional]
        tail = f"; missing: {', '.join(missing)}."
        if len(optional) < len(missing):
            tail += " Without them prior=auto runs the demo prior."
        elif optional:
            tail += " They are optional: prior=auto switches off the parts that need them."
    lines.append(f"{len(rows) - len(missing)} of {len(rows)} models on disk ({human_size(total)}){tail}")
    return "\n".join(lines)
