"""What the viewer shows of a run directory (or of every run in a bench folder): its head.glb,
stages, loss curves and metrics. Everything is read from the files a run writes; nothing is rerun."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headgen.errors import HeadgenError


@dataclass
class StageInfo:
    name: str
    kind: str
    status: str
    seconds: float
    has_result: bool


@dataclass
class RunInfo:
    root: Path
    method: str
    prompt: str
    stages: list[StageInfo]
    metrics: dict[str, Any] = field(default_factory=dict)
    glb: Path | None = None
    preview: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.method}: {self.prompt}"

    def curves(self) -> dict[str, tuple[list[float], list[float]]]:
        """``{stage: (steps, train/loss)}`` from each stage's CSV logs (resumed sessions appended)."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        for stage in self.stages:
            steps: list[float] = []
            losses: list[float] = []
            logs = self.root / "stages" / stage.name / "logs"
            for path in sorted(logs.rglob("metrics.csv")) if logs.is_dir() else []:
                with open(path, newline="") as f:
                    for row in csv.DictReader(f):
                        value = row.get("train/loss") or ""
                        if value and row.get("step"):
                            steps.append(float(row["step"]))
                            losses.append(float(value))
            if steps:
                order = sorted(range(len(steps)), key=steps.__getitem__)
                out[stage.name] = ([steps[i] for i in order], [losses[i] for i in order])
        return out


def read_run(root: Path) -> RunInfo:
    """A run directory's :class:`RunInfo`; an error when it is not one or holds no result yet."""
    root = Path(root)
    state_path = root / "state.json"
    if not root.is_dir():
        raise HeadgenError(f"--view {root}: no such folder")
    if not state_path.is_file():
        raise HeadgenError(f"--view {root}: not a run directory (no state.json) nor a bench folder (no runs "
                           "under it); give outputs/<method>/<prompt>@<time>/ or a bench folder")
    try:
        state = json.loads(state_path.read_text())
        summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").is_file() else {}
    except (json.JSONDecodeError, OSError) as exc:
        raise HeadgenError(f"--view {root}: state.json or summary.json is unreadable ({exc})") from exc
    by_name = {s["name"]: s for s in summary.get("stages", [])}
    stages = []
    for name in state.get("order", []):
        entry = state.get("stages", {}).get(name, {})
        stages.append(StageInfo(name, str(entry.get("kind", "?")), str(entry.get("status", "?")),
                                float(by_name.get(name, {}).get("seconds", entry.get("seconds", 0.0)) or 0.0),
                                (root / "stages" / name / "result.safetensors").is_file()))
    glb = _asset(root, summary, "glb", "head.glb")
    preview = _asset(root, summary, "preview", "preview.png")
    if glb is None and not any(s.has_result for s in stages):
        raise HeadgenError(f"--view {root}: the run has no results yet (no assets/head.glb, no finished stage); "
                           f"let it finish, or continue it with python launch.py --resume {root}")
    return RunInfo(root, str(summary.get("method", root.parent.name)), str(summary.get("prompt", root.name)),
                   stages, dict(summary.get("metrics", {})), glb, preview)


def _asset(root: Path, summary: dict[str, Any], key: str, default: str) -> Path | None:
    path = root / summary.get("assets", {}).get(key, f"assets/{default}")
    return path if path.is_file() else None


def find_runs(folder: Path) -> list[RunInfo]:
    """The run in ``folder``, or every finished run under a bench folder (``runs/...``)."""
    folder = Path(folder).expanduser()
    if (folder / "state.json").is_file() or not folder.is_dir():
        return [read_run(folder)]
    found = sorted(p.parent for p in folder.glob("**/state.json") if len(p.relative_to(folder).parts) <= 6)
    if not found:
        raise HeadgenError(f"--view {folder}: not a run directory (no state.json) and no runs under it; give "
                           "outputs/<method>/<prompt>@<time>/ or a bench folder")
    runs, skipped = [], []
    for path in found:
        try:
            runs.append(read_run(path))
        except HeadgenError as exc:
            skipped.append(str(exc))
    if not runs:
        raise HeadgenError(f"--view {folder}: none of its {len(found)} runs has a result yet ({skipped[0]})")
    return runs
