"""Run directories: ``outputs/<method>/<prompt-slug>@<YYYYmmdd-HHMMSS>/``.

Layout: ``config.yaml`` (resolved), ``state.json`` (stage progress, for resume),
``stages/<name>/`` (checkpoint, logs, previews, result), ``assets/`` (final files),
``summary.json``. Every write goes to a temporary file first and is renamed into place, so a run
killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from headgen.errors import ConfigError, ResumeError, one_line


def slugify(text: str, max_len: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (slug[:max_len].rstrip("-")) or "untitled"


def check_inside(filename: str, what: str) -> str:
    """``filename`` if it names a file inside its folder: relative, no ``..``, not empty. Exporters write
    only under ``assets/``, also when ``--export`` reads a config.yaml someone else wrote."""
    path = Path(filename)
    if not filename.strip() or path.is_absolute() or ".." in path.parts or filename.startswith("~"):
        raise ConfigError(f"{what}: {filename!r} must be a file name inside assets/ (relative, without '..')")
    return filename


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The real suffix is kept last: writers such as imageio pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


STATUSES = ("done", "pending", "running")


@dataclass(frozen=True)
class Stamp:
    """Which stage of which method and run wrote a file: recorded in every stage result and checkpoint
    and checked when it is read, so a file copied from another stage or run is refused."""

    stage: str
    method: str
    run: str

    def mismatch(self, found: Any, what: str) -> str:
        """An error message when ``found`` (a recorded stamp as a dict) is not this one, else ''."""
        if not isinstance(found, dict):
            return f"{what} records no stage, method and run"
        for key, label in (("stage", "stage"), ("method", "method"), ("run", "run")):
            if found.get(key) != getattr(self, key):
                return (f"{what} was written by {label} {found.get(key)!r}, not {getattr(self, key)!r} (copied from "
                        "another stage or run?)")
        return ""


def new_run_id() -> str:
    return uuid.uuid4().hex


def _state_problem(state: Any) -> str:
    """What is wrong with a parsed state.json, or an empty string."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not an object"
    for key, kind in (("order", list), ("stages", dict), ("run_id", str)):
        if key not in state:
            old = " (runs made before headgen recorded run ids cannot be resumed or exported)"
            return f"'{key}' is missing{old if key == 'run_id' else ''}"
        if not isinstance(state[key], kind):
            return f"'{key}' must be a {kind.__name__}, not {type(state[key]).__name__}"
    order, stages = state["order"], state["stages"]
    if not all(isinstance(n, str) for n in order) or len(set(order)) != len(order):
        return "'order' must list distinct stage names"
    if set(order) != set(stages):
        return f"'order' ({order}) and 'stages' ({list(stages)}) name different stages"
    if not re.fullmatch(r"[0-9a-f]{32}", state["run_id"]):
        return f"'run_id' {state['run_id']!r} is not a run identifier"
    for name in order:
        entry = stages[name]
        if not isinstance(entry, dict) or entry.get("status") not in STATUSES or not isinstance(entry.get("kind"), str):
            return f"stages.{name} must have a status ({', '.join(STATUSES)}) and a kind"
        seconds = entry.get("seconds", 0.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return f"stages.{name}.seconds must be a number"
    return ""


# ------------------------------------------------------------------------ checksummed files
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def promote_checked(source: Path, path: Path) -> None:
    """Rename ``source`` onto ``path`` and record its SHA-256 in ``<path>.sha256``.

    The checksum file lists the new digest and the one before it, and is replaced before the data
    file is renamed into place: a process killed between the two renames leaves the old data with
    its digest still listed, so the file on disk always verifies."""
    previous = sha256_file(path) if path.is_file() else ""
    atomic_write_text(checksum_path(path), "\n".join(d for d in (sha256_file(source), previous) if d) + "\n")
    os.replace(source, path)


def verify_checked(path: str | Path, what: str) -> None:
    """Raise :class:`ResumeError` unless ``path`` matches a digest its ``.sha256`` file lists."""
    path = Path(path)
    sums = checksum_path(path)
    try:
        listed = sums.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResumeError(f"{what}: its checksum file {sums.name} is missing or unreadable ({one_line(exc)})") from exc
    if sha256_file(path) not in listed:
        raise ResumeError(f"{what}: {path.name} does not match its checksum ({sums.name}): the file is corrupt or "
                          "was changed")


LOCK_FILE = ".lock"


def _try_lock(handle: Any) -> bool:
    """Take an exclusive, non-blocking OS lock on an open file; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class RunDir:
    """One run's directory and its progress file."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def create(cls, output_dir: str | Path, method: str, prompt: str) -> RunDir:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(output_dir) / slugify(method) / f"{slugify(prompt)}@{stamp}"
        root, n = base, 1
        while root.exists():  # two runs in the same second get distinct directories
            n += 1
            root = base.with_name(f"{base.name}-{n}")
        try:
            root.mkdir(parents=True)
            (root / "stages").mkdir()
            (root / "assets").mkdir()
        except OSError as exc:  # a file in the way, no permission, a read-only or full disk
            raise ConfigError(f"--output-dir {output_dir}: cannot create the run directory {root} there "
                              f"({one_line(exc)}); choose a folder you can write to") from exc
        return cls(root)

    @classmethod
    def open(cls, root: str | Path, purpose: str = "resume") -> RunDir:
        root = Path(root)
        flag = "source=" if purpose == "source" else f"--{purpose} "  # an edit's source is a recipe key
        if not root.is_dir():
            raise ResumeError(f"{flag}{root}: no such run directory")
        if not (root / "config.yaml").is_file() or not (root / "state.json").is_file():
            raise ResumeError(
                f"{flag}{root}: not a headgen run directory (config.yaml and state.json are missing)"
            )
        return cls(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    def stage_dir(self, name: str) -> Path:
        d = self.root / "stages" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_config(self, plain: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))

    def read_config(self) -> dict[str, Any]:
        """The run's config.yaml as a mapping; a file that is not readable YAML or not a mapping is a
        :class:`ResumeError` naming it (a hand edit that leaves a valid config is allowed)."""
        try:
            with open(self.config_path, encoding="utf-8") as f:
                plain = yaml.safe_load(f)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            raise ResumeError(f"{self.config_path} is not a readable YAML file ({one_line(exc)})") from exc
        if not isinstance(plain, dict):
            raise ResumeError(f"{self.config_path} must hold a mapping of settings, not {type(plain).__name__}")
        return plain

    def read_state(self) -> dict[str, Any]:
        """state.json, checked: ``order`` (stage names), ``stages`` (one entry per name with a known
        ``status``), ``run_id``. Anything else is a :class:`ResumeError` naming what is wrong."""
        path = self.root / "state.json"
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ResumeError(f"{path} is unreadable ({one_line(exc)})") from exc
        problem = _state_problem(state)
        if problem:
            raise ResumeError(f"{path} is damaged: {problem}; restore it, or start a new run")
        return state

    def stamp(self, stage: str) -> Stamp:
        """The stamp of this run's stage ``stage`` (method from config.yaml, run id from state.json)."""
        return Stamp(stage, str(self.read_config().get("name", "")), self.read_state()["run_id"])

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.root / "state.json", state)

    @contextlib.contextmanager
    def lock(self, purpose: str) -> Iterator[None]:
        """Hold the run directory for one process: a second ``--resume`` / ``--export`` of the same run
        stops at once instead of writing the same files (an OS lock on ``.lock``: released even when the
        process is killed)."""
        path = self.root / LOCK_FILE
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the duration of the context
        try:
            if not _try_lock(handle):
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ResumeError(
                    f"--{purpose} {self.root}: the run directory is in use by {holder}; wait for it to finish "
                    "or stop it, then try again"
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"headgen process {os.getpid()} ({purpose}, since "
                         f"{_dt.datetime.now().isoformat(timespec='seconds')})")
            handle.flush()
            yield
        finally:
            handle.close()  # closing the file releases the lock

    def read_summary(self) -> dict[str, Any]:
        """summary.json as an object ({} before the first stage ends)."""
        path = self.root / "summary.json"
        if not path.is_file():
            return {}
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ResumeError(f"{path} is unreadable ({one_line(exc)}); restore it, or delete it to start a new "
                              "summary (the run's metrics and asset list are kept there)") from exc
        if not isinstance(summary, dict):
            raise ResumeError(f"{path} is damaged: it holds a {type(summary).__name__}, not an object")
        return summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.root / "summary.json", summary)
