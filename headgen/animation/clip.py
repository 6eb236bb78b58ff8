"""Clips: morph-target weights (and optionally the head's rotation) over time.

A clip is what both head.glb's animation (LINEAR keyframes: times, weights per target, a root
rotation) and animation.mp4 (the same weights sampled at the video's frame rate) play. It is made
from keyframes (the default expression sequence) or from a Live Link Face performance, with names
resolved against the head's expressions: a head name as is, else an ARKit name through
:mod:`headgen.animation.arkit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from headgen.animation.arkit import ARKIT_SHAPES, head_targets
from headgen.animation.livelink import Performance
from headgen.errors import HeadgenError, did_you_mean

log = logging.getLogger(__name__)

DEFAULT_SEQUENCE: list[dict[str, float]] = [
    {},
    {"jawOpen": 0.6},
    {"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9},
    {"mouthSmileLeft": 0.5, "mouthSmileRight": 0.5, "eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
    {"browInnerUp": 0.9, "jawOpen": 0.25},
    {},
]
"""The default keyframes (ARKit names): neutral, open jaw, smile, blink, brows up, neutral."""


@dataclass
class Clip:
    """Keyframed morph weights over the head's expressions ``names``."""

    name: str
    times: np.ndarray
    """[N] seconds, strictly increasing, from 0."""
    weights: np.ndarray
    """[N,E] weight of each of ``names`` at each time."""
    names: list[str]
    rotation: np.ndarray | None = None
    """[N,4] root-node rotation quaternions (x, y, z, w), or None."""

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def sample(self, fps: float) -> np.ndarray:
        """[M,E] weights at ``0, 1/fps, ...`` up to the duration (linear between keyframes, as glTF's
        LINEAR sampler plays them)."""
        if fps <= 0:
            raise HeadgenError(f"clip {self.name}: fps must be > 0, got {fps}")
        at = np.arange(0.0, self.duration + 0.5 / fps, 1.0 / fps)
        return np.stack([np.interp(at, self.times, self.weights[:, e]) for e in range(len(self.names))], axis=1)


def resolve(name: str, head_names: list[str]) -> list[str]:
    """The head expressions ``name`` drives: itself if the head has it, else its ARKit mapping."""
    if name in head_names:
        return [name]
    return head_targets(name, head_names) if name in ARKIT_SHAPES else []


def keyframe_weights(sequence: list[dict[str, float]], names: list[str], strict: bool,
                     who: str = "exporter animation") -> np.ndarray:
    """Keyframes as a [K,E] weight matrix over the head expressions ``names``.

    A keyframe name is a head expression or an ARKit shape. Names that drive nothing raise a
    HeadgenError when ``strict``; otherwise they are skipped with one log message. Either way it is
    an error when no name of the sequence drives anything.
    """
    if len(sequence) < 2:
        raise HeadgenError(f"{who}: sequence needs at least 2 keyframes, got {len(sequence)}")
    index = {n: i for i, n in enumerate(names)}
    weights = np.zeros((len(sequence), len(names)))
    missing: list[str] = []
    used = False
    for k, frame in enumerate(sequence):
        for name, w in frame.items():
            targets = resolve(name, names)
            for t in targets:
                weights[k, index[t]] = float(w)
            used |= bool(targets)
            if targets:
                continue
            if strict:
                raise HeadgenError(
                    f"{who}: sequence[{k}] names expression '{name}'{did_you_mean(name, names)}, which the head "
                    f"does not have (nor is it an ARKit shape it maps); it has: {', '.join(names)}"
                )
            if name not in missing:
                missing.append(name)
    if not used:
        raise HeadgenError(
            f"{who}: none of the sequence's expressions ({', '.join(missing) or 'none given'}) exist in the head; "
            f"it has: {', '.join(names)}. Set the sequence to names it has."
        )
    if missing:
        log.info("%s: the head has no %s; those keyframe weights are skipped", who, ", ".join(missing))
    return weights


def smoothstep_frames(keys: np.ndarray, frames: int) -> np.ndarray:
    """[K,E] keyframes -> [frames,E]: keyframes evenly spaced, smoothstep in between."""
    if frames < 1:
        raise HeadgenError(f"animation: frames must be >= 1, got {frames}")
    k = keys.shape[0]
    s = np.linspace(0.0, k - 1.0, frames) if frames > 1 else np.zeros(1)
    lo = np.minimum(np.floor(s).astype(int), k - 2)
    t = np.clip(s - lo, 0.0, 1.0)
    t = (t * t * (3.0 - 2.0 * t))[:, None]
    return keys[lo] * (1.0 - t) + keys[lo + 1] * t


def keyframe_clip(sequence: list[dict[str, float]], names: list[str], seconds: float, fps: float = 30.0,
                  strict: bool = False, name: str = "expressions") -> Clip:
    """A clip of ``seconds`` through ``sequence`` (evenly spaced keyframes, smoothstep eased, baked at
    ``fps`` so that a LINEAR player reproduces the easing)."""
    if seconds <= 0:
        raise HeadgenError(f"animation clip: seconds must be > 0, got {seconds}")
    frames = max(2, round(seconds * fps) + 1)
    weights = smoothstep_frames(keyframe_weights(sequence, names, strict), frames)
    return Clip(name, np.linspace(0.0, seconds, frames), weights, list(names))


def yaw_pitch_roll_quaternions(ypr: np.ndarray) -> np.ndarray:
    """[N,3] yaw (about +Y), pitch (about +X), roll (about +Z) in radians -> [N,4] x, y, z, w of
    ``R = R_y(yaw) R_x(pitch) R_z(roll)`` (glTF's Y-up frame; the head faces +Z)."""
    def axis(angle: np.ndarray, k: int) -> np.ndarray:
        q = np.zeros((len(angle), 4))
        q[:, k] = np.sin(angle / 2)
        q[:, 3] = np.cos(angle / 2)
        return q

    def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ax, ay, az, aw = a.T
        bx, by, bz, bw = b.T
        return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                         aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], axis=1)

    return mul(mul(axis(ypr[:, 0], 1), axis(ypr[:, 1], 0)), axis(ypr[:, 2], 2))


def performance_clip(perf: Performance, names: list[str], name: str | None = None,
                     report: Callable[[str], None] | None = None) -> Clip:
    """A clip of a Live Link Face take on the head ``names``: ARKit shapes mapped to the head's
    expressions (unmapped ones reported once), the head rotation on the root when recorded."""
    index = {n: i for i, n in enumerate(names)}
    weights = np.zeros((len(perf.times), len(names)))
    unmapped = []
    for arkit, values in perf.shapes.items():
        targets = head_targets(arkit, names)
        if not targets:
            unmapped.append(arkit)
        for t in targets:
            weights[:, index[t]] = values
    if len(unmapped) == len(perf.shapes):
        raise HeadgenError(f"performance {perf.source}: none of its ARKit shapes maps onto the head's expressions "
                           f"({', '.join(names)})")
    if unmapped:
        (report or log.warning)(f"performance {perf.source}: no head expression for {', '.join(unmapped)}; those "
                                "columns are skipped (the mapping: python -m headgen.animation.arkit)")
    rotation = None if perf.head_rotation is None else yaw_pitch_roll_quaternions(perf.head_rotation)
    return Clip(name or "performance", perf.times.copy(), weights, list(names), rotation)


__all__ = ["DEFAULT_SEQUENCE", "Clip", "keyframe_clip", "keyframe_weights", "performance_clip", "resolve",
           "smoothstep_frames", "yaw_pitch_roll_quaternions"]
