"""What the CLIP selectors share: how candidates are drawn for CLIP and how they are scored.

``clip-select`` (identity) and ``clip-hair`` (hairstyle, colour) inherit these options; each sets its
own defaults where DreamFace's two selections differ (views, lights, batch size, the relative term).
Both selectors also derive from :class:`ClipViewsSelector` (their config and their imager).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from headgen.config.typed import model_ref
from headgen.prior.clip_views import DEFAULT_DISTANCE, DEFAULT_FOVY, DEFAULT_LIGHTS, DEFAULT_VIEWS, GeometryImager


@dataclass
class ClipViewsConfig:
    model: str = model_ref("clip_l14")
    """The CLIP model (a key of the recipe's models:); the demo prior uses its demo CLIP."""
    prompt: str = ""
    """Text to select for; empty: the run's prompt."""
    views: list[tuple[float, float]] = field(default_factory=lambda: list(DEFAULT_VIEWS))
    """(elevation, azimuth) degrees of each view; default front, left 3/4, right 3/4."""
    lights: int = DEFAULT_LIGHTS
    """Directional lights per view (camera-relative: a key light plus a spiral within 60 degrees)."""
    resolution: int = 224
    """Render size in pixels (CLIP resizes to its own input size)."""
    distance: float = DEFAULT_DISTANCE
    """Camera distance in head heights (the cameras look at the origin of the normalised head frame)."""
    fovy: float = DEFAULT_FOVY
    """Vertical field of view, degrees."""
    antialias: bool = False
    """Antialias silhouettes of the renders (slower; no gradients are needed here)."""
    backend: Literal["auto", "torch", "nvdiffrast"] = "auto"
    """Rasterizer backend of the renders."""
    batch_size: int = 16
    """Candidates rendered and embedded per batch (views x lights images each)."""
    lambda_direct: float = 1.0
    """Weight of the direct score e_i~ . e_t~."""
    lambda_relative: float = 1.0
    """Weight of AvatarCLIP's relative score De_i~ . De_t~ (0: the plain matching score)."""
    anchor_text: str = "the face"
    """The text whose embedding is subtracted from the prompt's (AvatarCLIP's relative direction)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "lights"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if not self.views:
            raise ValueError("views must list at least one [elevation, azimuth]")

    def imager(self, device: torch.device | str, cls: type[GeometryImager] = GeometryImager) -> GeometryImager:
        """The renderer of candidates for CLIP these options describe."""
        return cls(self.views, self.lights, self.resolution, self.distance, self.fovy, self.antialias, self.backend,
                   device)


class ClipViewsSelector:
    """Base of the CLIP selectors: holds the config and draws candidates with ``imager_cls``."""

    imager_cls: ClassVar[type[GeometryImager]] = GeometryImager
    """The renderer of candidates (a :class:`GeometryImager` subclass draws more than the bare head)."""

    def __init__(self, cfg: ClipViewsConfig, ctx: Any = None):
        self.cfg = cfg

    def imager(self, device: torch.device | str) -> GeometryImager:
        return self.cfg.imager(device, self.imager_cls)
