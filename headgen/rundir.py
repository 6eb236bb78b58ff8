"""Run directories: ``outputs/<method>/<prompt-slug>@<YYYYmmdd-HHMMSS>/``.

Layout: ``config.yaml`` (resolved), ``state.json`` (stage progress, for resume),
``stages/<name>/`` (checkpoint, logs, previews, result), ``assets/`` (final files),
``summary.json``. Every write goes to a temporary file first and is renamed into place, so a run
killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from headgen.errors import ConfigError, ResumeError


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
        root.mkdir(parents=True)
        (root / "stages").mkdir()
        (root / "assets").mkdir()
        return cls(root)

    @classmethod
    def open(cls, root: str | Path, purpose: str = "resume") -> RunDir:
        root = Path(root)
        if not root.is_dir():
            raise ResumeError(f"--{purpose} {root}: no such run directory")
        if not (root / "config.yaml").is_file() or not (root / "state.json").is_file():
            raise ResumeError(
                f"--{purpose} {root}: not a headgen run directory (config.yaml and state.json are missing)"
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
        with open(self.config_path, encoding="utf-8") as f:
            return yaml.safe_load(f)

    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ResumeError(f"{self.root}/state.json is unreadable: {exc}") from exc

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
        path = self.root / "summary.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.root / "summary.json", summary)
