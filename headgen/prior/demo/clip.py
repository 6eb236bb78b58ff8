"""The demo prior's CLIP analogue (see DESIGN.md, "The demo prior"). It is not a text model.

* Image embedding: a fixed random projection of a coarse appearance descriptor of the image:
  the image area-downsampled to 16 x 16 (RGB), flattened, minus its mean, projected to
  ``DIM`` = 128 with a matrix drawn once from a fixed seed, L2-normalised. Similar-looking
  images get similar embeddings (random projections nearly preserve angles).
* Text embedding of a prompt: the normalised mean image embedding of the prompt's demo target
  (``world.target_for(text)``) drawn the way the caller draws its candidates: with the
  ``scene`` the caller passes (e.g. the hair selector draws head and hair, the hair in the
  target's hairstyle and colour), else its bare geometry rendered exactly as CLIP selection
  renders a candidate (the default selection views and lights). Anchor texts such as "the face"
  map to the normalised mean over the demo prior's bank (its unconditional distribution), each
  bank target drawn the same way.

So CLIP selection under the demo prior prefers candidates whose geometry looks like the target's,
and the target's own geometry scores a direct cosine of 1. ``key`` names the embedding function;
changing the descriptor or the seed must change ``KEY`` (it keys the pool caches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.prior.clip import TextScene, TextSubject, clip_score
from headgen.prior.demo.targets import HAIR_COLOURS, DemoTarget
from headgen.prior.demo.world import DemoWorld

DIM = 128
GRID = 16
SEED = 20_240_611
KEY = f"demo-clip-v1:{GRID}x{GRID}->{DIM}:seed{SEED}"
ANCHOR_TEXTS = frozenset({"the face", "a face", "face", "the head", "a head", "head", "a human face"})
TEXT_RESOLUTION = 64
"""Render size of the targets for text embeddings (the descriptor is 16 x 16 anyway)."""


def projection(device: torch.device | str = "cpu") -> Tensor:
    """The fixed [3 * GRID * GRID, DIM] projection (the same on every machine and forever)."""
    g = torch.Generator().manual_seed(SEED)
    return (torch.randn(3 * GRID * GRID, DIM, generator=g) / (3 * GRID * GRID) ** 0.5).to(device)


class DemoClip:
    """The demo prior's CLIP: random-projection image embeddings, target-render text embeddings."""

    key = KEY

    def __init__(self, world: DemoWorld, text_resolution: int = TEXT_RESOLUTION):
        self.world = world
        self.device = world.device
        self.proj = projection(self.device)
        self.text_resolution = text_resolution
        self._text: dict[tuple[str, str | None], Tensor] = {}
        self._imager: Any = None

    @classmethod
    def for_run(cls, ctx: Any) -> DemoClip:
        return cls(DemoWorld.for_run(ctx))

    @torch.no_grad()
    def image_embeddings(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"CLIP images must be [B, H, W, 3] in [0, 1], got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        grey = x.stride(-1) == 0  # channels expanded from one (GeometryImager): pool one, 5x faster
        x = (x[..., :1] if grey else x).permute(0, 3, 1, 2)
        small = F.interpolate(x, size=(GRID, GRID), mode="area") if x.shape[-2:] != (GRID, GRID) else x
        small = small.expand(-1, 3, -1, -1) if grey else small
        flat = small.flatten(1)
        flat = flat - flat.mean(1, keepdim=True)
        return F.normalize(flat @ self.proj, dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str], scene: TextScene | None = None) -> Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for text in texts:
            key = (text, None if scene is None else scene.key)
            if key not in self._text:
                self._text[key] = self._embed_text(text) if scene is None else self._embed_scene(text, scene)
            out.append(self._text[key])
        return torch.stack(out) if out else torch.zeros(0, DIM, device=self.device)

    def score(self, images: Tensor, text: str) -> float:
        return clip_score(self, images, text)

    # ------------------------------------------------------------------ text = a known head
    def imager(self) -> Any:
        if self._imager is None:
            from headgen.prior.clip_views import (
                DEFAULT_DISTANCE,
                DEFAULT_FOVY,
                DEFAULT_LIGHTS,
                DEFAULT_VIEWS,
                GeometryImager,
            )

            self._imager = GeometryImager(DEFAULT_VIEWS, DEFAULT_LIGHTS, self.text_resolution, DEFAULT_DISTANCE,
                                          DEFAULT_FOVY, device=self.device)
        return self._imager

    def head_embedding(self, beta: Tensor) -> Tensor:
        """[D] the selection embedding of the head with identity ``beta``."""
        from headgen.prior.clip_views import selection_embedding

        head = self.world.head
        verts = head.vertices(beta.to(head.v_template.device))
        return selection_embedding(self, verts, head.faces, self.imager())

    def subject(self, target: DemoTarget) -> TextSubject:
        """What a scene draws of a target: its geometry, hairstyle and hair colour."""
        head = self.world.head
        return TextSubject(head.vertices(target.beta.to(head.v_template.device)), head.faces,
                           target.spec.hairstyle, HAIR_COLOURS[target.spec.hair])

    def scene_embedding(self, target: DemoTarget, scene: TextScene) -> Tensor:
        """[D] the normalised mean embedding of ``scene``'s images of ``target``."""
        return F.normalize(self.image_embeddings(scene.draw(self.subject(target))).mean(0), dim=-1)

    def _embed_scene(self, text: str, scene: TextScene) -> Tensor:
        if " ".join(text.lower().split()) in ANCHOR_TEXTS:
            bank = torch.stack([self.scene_embedding(t, scene) for t in self.world.bank])
            return F.normalize(bank.mean(0), dim=-1)
        return self.scene_embedding(self.world.target_for(text), scene)

    def _embed_text(self, text: str) -> Tensor:
        if " ".join(text.lower().split()) in ANCHOR_TEXTS:
            bank = torch.stack([self.head_embedding(t.beta) for t in self.world.bank])
            return F.normalize(bank.mean(0), dim=-1)
        return self.head_embedding(self.world.target_for(text).beta)


__all__ = ["ANCHOR_TEXTS", "DIM", "KEY", "DemoClip", "projection"]
