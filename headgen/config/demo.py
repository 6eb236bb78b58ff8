"""The demo prior's settings (``demo:`` in a recipe; read only when a run uses the demo prior)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DemoSettings:
    """What the demo prior's data set is (see DESIGN.md, "The demo prior"); no effect on pretrained runs."""

    bank_size: int = 16
    """Targets in the unconditional mixture besides the run's own."""
    lights: int = 3
    """Lights per camera in the conditional data."""
    texture_size: int = 256
    """UV albedo size of the targets."""
    supersample: int = 2
    """Data renders are made at this multiple of the latent resolution and encoded at it."""
    views: Literal["exact", "ambiguous"] = "ambiguous"
    """exact: every branch's data are rendered at the batch's own cameras (text branches "know"
    the camera); ambiguous: a text branch's data cover every azimuth its text allows
    (:mod:`headgen.prior.demo.views`), a landmark-controlled sample's are rendered at the camera
    read from its landmark map."""
    cache_mb: float = 1024.0
    """Memory budget of the cached cell renders (ambiguous views)."""
    autoencoder: Literal["block", "smooth"] = "smooth"
    """block: 8x8 average pooling / nearest up-sampling; smooth: tent-window down-sampling and its
    pseudo-inverse (:mod:`headgen.prior.demo.autoencoder`)."""
