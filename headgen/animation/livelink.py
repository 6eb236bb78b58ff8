"""Live Link Face performance files (Epic's iPhone app; the CSV it records per take).

Layout, one row per captured frame::

    Timecode,BlendShapeCount,EyeBlinkLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,...
    07:44:57:02.944,61,0.05,...

``Timecode`` is ``HH:MM:SS:FF.fff``: hours, minutes, seconds, the frame within the second and the
sub-frame fraction (captures run faster than the timecode, so several rows share a frame number).
The timecode's frame rate is not written; it is read off the frame numbers (the largest ``FF`` + 1,
rounded up to the nearest of 24, 25, 30, 48, 50, 60), which needs a take of at least one second,
or given (``fps``). The 52 ARKit shapes are in PascalCase; the 9 rotation columns (head, left
eye, right eye: yaw, pitch, roll) are optional; the head's are read as radians.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headgen.animation.arkit import ARKIT_SHAPES, camel
from headgen.errors import HeadgenError

ROTATIONS: tuple[str, ...] = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                              "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
TIMECODE_RATES: tuple[int, ...] = (24, 25, 30, 48, 50, 60)
_TIMECODE = re.compile(r"(\d+):(\d{1,2}):(\d{1,2}):(\d+)(?:\.(\d+))?")


@dataclass
class Performance:
    """One take: per-frame ARKit weights and (when recorded) the head's rotation."""

    source: str
    fps: float
    """The timecode's frame rate."""
    times: np.ndarray
    """[N] seconds from the first row, strictly increasing."""
    shapes: dict[str, np.ndarray]
    """ARKit name (camelCase) -> [N] weights."""
    head_rotation: np.ndarray | None
    """[N,3] yaw, pitch, roll in radians, or None when the columns are absent."""

    @property
    def duration(self) -> float:
        return float(self.times[-1])


def _bad(path: Path, what: str) -> HeadgenError:
    return HeadgenError(f"performance {path}: {what} (expected a Live Link Face CSV: Timecode, BlendShapeCount, "
                        "the 52 ARKit shapes in PascalCase, optionally the 9 head/eye rotation columns)")


def parse_timecode(text: str) -> tuple[int, int, float]:
    """``HH:MM:SS:FF.fff`` -> (whole seconds, frame, sub-frame fraction)."""
    m = _TIMECODE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"timecode {text!r} is not HH:MM:SS:FF(.fff)")
    h, mi, s, f = (int(m.group(i)) for i in range(1, 5))
    frac = float("0." + m.group(5)) if m.group(5) else 0.0
    return h * 3600 + mi * 60 + s, f, frac


def timecode_rate(frames: list[int], seconds: list[int]) -> int | None:
    """The timecode rate read off the frame numbers, or None when the take never crosses a second."""
    if len(set(seconds)) < 2:
        return None
    top = max(frames) + 1
    for rate in TIMECODE_RATES:
        if top <= rate:
            return rate
    return top


def read_live_link_csv(path: str | Path, fps: float | None = None) -> Performance:
    """Read a Live Link Face CSV; every problem is one HeadgenError naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise HeadgenError(f"performance {path}: no such file (give the Live Link Face take's .csv)")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 3:
        raise _bad(path, f"{max(len(rows) - 1, 0)} frame row(s); a performance needs at least 2")
    header = [h.strip() for h in rows[0]]
    if header[:2] != ["Timecode", "BlendShapeCount"]:
        raise _bad(path, f"the first columns are {header[:2]}, not ['Timecode', 'BlendShapeCount']")
    known = {n[:1].upper() + n[1:] for n in ARKIT_SHAPES} | set(ROTATIONS)
    unknown = [h for h in header[2:] if h not in known]
    if unknown:
        raise _bad(path, f"unknown column(s) {', '.join(unknown[:5])}")
    missing = [n for n in ARKIT_SHAPES if n[:1].upper() + n[1:] not in header]
    if missing:
        raise _bad(path, f"missing ARKit column(s) {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    seconds, frames, fracs, values = [], [], [], []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise _bad(path, f"row {i} has {len(row)} fields, the header {len(header)}")
        try:
            s, fr, frac = parse_timecode(row[0])
            vals = [float(v) for v in row[2:]]
        except ValueError as exc:
            raise _bad(path, f"row {i}: {exc}") from exc
        if not all(math.isfinite(v) for v in vals):
            raise _bad(path, f"row {i} holds a non-finite value")
        seconds.append(s)
        frames.append(fr)
        fracs.append(frac)
        values.append(vals)
    rate = fps if fps is not None else timecode_rate(frames, seconds)
    if rate is None:
        raise _bad(path, "the take is shorter than a second, so its timecode rate cannot be read off the frame "
                         "numbers; give it (the animation exporter's fps, or --fps)")
    if rate <= 0:
        raise HeadgenError(f"performance {path}: fps must be > 0, got {rate}")
    absolute = np.array([s + (fr + frac) / rate for s, fr, frac in zip(seconds, frames, fracs, strict=True)])
    times = absolute - absolute[0]
    back = np.nonzero(np.diff(times) <= 0)[0]
    if back.size:
        raise _bad(path, f"the timecode does not increase at row {int(back[0]) + 3} ({rows[int(back[0]) + 2][0]})")
    table = np.asarray(values, dtype=np.float64)
    columns = {h: table[:, j] for j, h in enumerate(header[2:])}
    shapes = {camel(h): columns[h] for h in header[2:] if h not in ROTATIONS}
    head = None
    if all(h in columns for h in ROTATIONS[:3]):
        head = np.stack([columns[h] for h in ROTATIONS[:3]], axis=1)
    return Performance(str(path), float(rate), times, shapes, head)


def write_live_link_csv(path: str | Path, weights: dict[str, np.ndarray | list[float]], fps: int = 30,
                        head_rotation: np.ndarray | None = None, start: str = "12:00:00:00") -> Path:
    """Write a take in the Live Link Face layout (ARKit camelCase or PascalCase keys; others zero):
    for tests and for making performances by script."""
    path = Path(path)
    n = len(next(iter(weights.values())))
    cols = {camel(k): np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    unknown = sorted(set(cols) - set(ARKIT_SHAPES))
    if unknown:
        raise HeadgenError(f"write_live_link_csv: not ARKit shapes: {', '.join(unknown)}")
    s0, f0, _ = parse_timecode(start)
    header = ["Timecode", "BlendShapeCount", *(n[:1].upper() + n[1:] for n in ARKIT_SHAPES), *ROTATIONS]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n):
            total = s0 * fps + f0 + i
            sec, fr = divmod(total, fps)
            code = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}:{fr:02d}.000"
            rot = list(head_rotation[i]) + [0.0] * 6 if head_rotation is not None else [0.0] * 9
            w.writerow([code, len(ARKIT_SHAPES) + len(ROTATIONS),
                        *(f"{cols[a][i]:.6f}" if a in cols else "0" for a in ARKIT_SHAPES), *(f"{r:.6f}" for r in rot)])
    return path


__all__ = ["ROTATIONS", "Performance", "parse_timecode", "read_live_link_csv", "timecode_rate", "write_live_link_csv"]
