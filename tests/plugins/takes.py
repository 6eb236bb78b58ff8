"""Live Link Face takes made by script for the animation tests."""

from __future__ import annotations

import numpy as np


def jaw_then_smile(fps: int = 30, seconds: float = 2.0) -> dict[str, np.ndarray]:
    """2 s: the jaw opens and closes in the first second, a smile rises and falls in the second (and
    the tongue, which ICT-FaceKit has no shape for, moves with the jaw)."""
    n = int(round(fps * seconds))
    t = np.arange(n) / fps
    jaw = np.where(t < 1.0, np.sin(np.pi * t), 0.0)
    smile = np.where(t >= 1.0, np.sin(np.pi * (t - 1.0)), 0.0)
    return {"JawOpen": jaw, "MouthSmileLeft": smile, "MouthSmileRight": smile, "TongueOut": 0.2 * jaw}
