"""Preset hair colours (DreamFace selects one of a predefined list by rendering the hair on the head).

The demo prior paints its targets' hair with the same values (``headgen.prior.demo.targets``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from headgen.errors import ConfigError, did_you_mean

PRESET_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.08, 0.07, 0.06),
    "brown": (0.30, 0.19, 0.11),
    "blonde": (0.86, 0.72, 0.45),
    "red": (0.62, 0.25, 0.12),
    "grey": (0.66, 0.66, 0.66),
    "white": (0.90, 0.90, 0.88),
}
"""Name -> linear RGB albedo in [0, 1]."""


def colour_rgb(name: str, where: str = "hair colour") -> Tensor:
    """[3] albedo of the preset colour ``name`` (a ConfigError naming the presets otherwise)."""
    if name not in PRESET_COLOURS:
        raise ConfigError(
            f"{where}: unknown hair colour '{name}'{did_you_mean(name, PRESET_COLOURS)}; "
            f"preset colours: {', '.join(PRESET_COLOURS)}"
        )
    return torch.tensor(PRESET_COLOURS[name], dtype=torch.float32)


__all__ = ["PRESET_COLOURS", "colour_rgb"]
