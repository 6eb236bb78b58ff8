"""DreamFace's hair selection: a hairstyle from a library, then a preset colour, both by CLIP (METHODS.md, step 3).

The paper selects "the hairstyle that best matches the prompt, then the predefined hair color by
rendering the hair on the head". Here, with the representation's current head (after detail
carving) as bare geometry:

1. Style. Every hairstyle of the library (plus ``none``, bald) is fitted to the head
   (:class:`headgen.hair.HairFit`) and drawn on it, the hair in ``style_colour``, from ``views``
   under ``lights`` camera-relative directional lights (as CLIP selection of identity draws a
   candidate: grey Lambert head over white). A candidate's embedding is the renormalised mean
   CLIP image embedding of its images; the best score against the prompt wins.
2. Colour. The chosen style is drawn in each preset colour of ``colours``; the best score wins.

Score: ``lambda_direct * (e_i . e_t) + lambda_relative * (De_i . De_t)`` with ``De_i = e_i - mean of
the candidates`` and ``De_t = e_t - e(anchor_text)`` (AvatarCLIP's relative term, normalised
vectors); the default is the paper's plain matching score (``lambda_relative: 0``).

The hair is attached to the representation (``set_hair``): it is exported and previewed with the
head, never optimised. ``style: none`` (or ``library: none``) skips the stage's work and leaves
the head bald; ``style``/``colour`` may also name one style/colour to use without selection.

Under the demo prior the CLIP's text embedding of the prompt is its target drawn by
:class:`HairScene` exactly as candidates are drawn (the target's geometry with the target's
hairstyle, in ``style_colour`` for step 1 and in the target's hair colour for step 2), so the
selection is scored against a known answer.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import ConfigError
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.hair import NONE, PRESET_COLOURS, HairFit, HairLibrary, colour_rgb, resolve_library
from headgen.prior.clip import ClipModel, TextSubject
from headgen.prior.clip_views import GeometryImager, cat_images, mean_embedding
from headgen.prior.load import get_clip
from headgen.registry import register
from headgen.rundir import atomic_write_json
from selection.clip_config import ClipViewsConfig, ClipViewsSelector

DEFAULT_HAIR_VIEWS: list[tuple[float, float]] = [(0.0, 0.0), (0.0, 45.0), (0.0, -45.0), (0.0, 180.0)]
"""(elevation, azimuth) degrees: front, left and right 3/4, back (hair is mostly seen from behind)."""

Hair = tuple[Tensor, Tensor, Tensor]
"""(vertices [V,3], faces [F,3], albedo [3])."""


# ---------------------------------------------------------------------------------------- drawing
class HairImager(GeometryImager):
    """CLIP selection's images of the head (grey) with optional hair in its own albedo, both lit
    by ``albedo * (ambient + color * max(0, n . l))`` over white: ``[len(views) * lights, H, W, 3]``."""

    label = "clip-hair"

    def images(self, vertices: Tensor, faces: Tensor, hair: Hair | None = None) -> Tensor:  # type: ignore[override]
        parts = []
        if hair is not None:
            hv, hf, albedo = hair
            parts.append(SurfaceGeometry(Mesh(hv, hf), base_color=albedo.float(), name="hair"))
        return super().images(vertices, faces, parts)


class HairScene:
    """Draws a text's subject (the demo prior's target) as the selector draws a candidate: its
    geometry with its own hairstyle from the library, the hair in ``colour`` (a fixed albedo) or,
    when ``colour`` is None, in the subject's hair colour."""

    def __init__(self, imager: HairImager, library: HairLibrary, fit: HairFit, colour: Tensor | None):
        self.imager, self.library, self.fit, self.colour = imager, library, fit, colour
        what = "own-colour" if colour is None else ",".join(f"{c:.4f}" for c in colour.tolist())
        digest = hashlib.sha256(f"{imager.key}|{library.key}|{what}".encode()).hexdigest()[:16]
        self.key = f"clip-hair:{digest}"
        self._warned: set[str] = set()

    def draw(self, subject: TextSubject) -> Tensor:
        style = subject.hairstyle
        hair = None
        if style != NONE:
            if style in self.library:
                verts = self.fit.fit(self.library.get(style), subject.vertices)
                albedo = self.colour if self.colour is not None else torch.tensor(subject.hair_color)
                hair = (verts, self.library.get(style).faces, albedo)
            elif style not in self._warned:
                self._warned.add(style)
                warnings.warn(f"clip-hair: the text's hairstyle '{style}' is not in the hair library "
                              f"{self.library.root} ({', '.join(self.library.names)}); it is drawn bald",
                              stacklevel=2)
        return self.imager.images(subject.vertices, subject.faces, hair)


# ---------------------------------------------------------------------------------------- config
@dataclass
class ClipHairConfig(ClipViewsConfig):
    library: str = "builtin"
    """Hairstyle library: builtin (procedural styles made for the head model), a folder of meshes
    (see headgen.hair.library), or none (no hair, like style: none)."""
    style: str = "auto"
    """auto: CLIP selection among the library's styles (and none); none: no hair (the stage only
    records it); a style name: that style without selection."""
    colour: str = "auto"
    """auto: CLIP selection among colours; a preset name: that colour without selection."""
    colours: list[str] = field(default_factory=lambda: list(PRESET_COLOURS))
    """Preset colours to choose from (black, brown, blonde, red, grey, white)."""
    include_none: bool = True
    """Let "none" (bald) compete with the library's styles."""
    style_colour: str = "brown"
    """Preset colour the hair is drawn in while the style is selected."""
    views: list[tuple[float, float]] = field(default_factory=lambda: list(DEFAULT_HAIR_VIEWS))
    """(elevation, azimuth) degrees of each view; default front, left/right 3/4 and back."""
    lights: int = 4
    """Directional lights per view (camera-relative: a key light plus a spiral within 60 degrees)."""
    batch_size: int = 4
    """Candidates rendered and embedded per CLIP batch (views x lights images each)."""
    lambda_relative: float = 0.0
    """Weight of AvatarCLIP's relative score (0: the paper's plain matching score)."""
    anchor_text: str = "the head"
    """Text whose embedding the relative score subtracts from the prompt's."""
    cache_dir: str = ""
    """Where the built-in library is generated; empty: $HEADGEN_CACHE_DIR/hair or ~/.cache/headgen/hair."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.colours:
            raise ValueError(f"colours must name at least one preset colour ({', '.join(PRESET_COLOURS)})")
        for name in [*self.colours, self.style_colour] + ([] if self.colour == "auto" else [self.colour]):
            if name not in PRESET_COLOURS:
                raise ValueError(f"unknown hair colour '{name}'; preset colours: {', '.join(PRESET_COLOURS)} "
                                 "(colour also takes auto)")
        if not self.library.strip() or not self.style.strip():
            raise ValueError("library and style must not be empty (use none for no hair)")

    @property
    def skip(self) -> bool:
        """No hair at all: style none or library none."""
        return self.style == NONE or self.library == NONE

    def unused_models(self) -> set[str]:
        needs_clip = not self.skip and (self.style == "auto" or (self.colour == "auto" and len(self.colours) > 1))
        return set() if needs_clip else {"model"}


@dataclass
class HairSelection:
    """The outcome of a hair selection."""

    style: str
    colour: str
    style_scores: dict[str, float]
    colour_scores: dict[str, float]


# ---------------------------------------------------------------------------------------- selector
@register("selector", "clip-hair")
class ClipHair(ClipViewsSelector):
    """DreamFace hair: the hairstyle, then the preset colour, whose renders on the head best match the prompt."""

    Config = ClipHairConfig
    cfg: ClipHairConfig
    imager_cls = HairImager

    def select(self, representation: Any, ctx: Any, generator: torch.Generator | None = None) -> HairSelection:
        """Attach the selected hair to ``representation`` (``generator`` is unused: nothing is random)."""
        c = self.cfg
        if not hasattr(representation, "set_hair"):
            name = getattr(representation, "registered_name", type(representation).__name__)
            raise ConfigError(f"selector clip-hair needs a representation that can carry hair (parametric-mesh), "
                              f"got {name}")
        stage = getattr(ctx, "current_stage", "") or "hair"
        if c.skip:
            representation.set_hair(None, style=NONE, colour=NONE)
            result = HairSelection(NONE, NONE, {}, {})
            self._record(ctx, stage, result, None, "")
            ctx.log("clip-hair: no hair (style: none)")
            return result
        prompt = c.prompt or ctx.config.prompt
        head = getattr(representation, "head", None) or ctx.head
        library = resolve_library(c.library, head, c.cache_dir or None)
        device = getattr(ctx, "device", "cpu")
        imager = self.imager(device)
        fit = HairFit(head.v_template)
        with torch.no_grad():
            verts = representation.vertices().detach().to(imager.device)
        faces = representation.faces.to(imager.device)
        clip = get_clip(ctx, c.model) if c.unused_models() == set() else None

        def hair(style: str, colour: Tensor) -> Hair | None:
            if style == NONE:
                return None
            s = library.get(style)
            return fit.fit(s, verts), s.faces, colour

        if c.style == "auto":
            styles = ([NONE] if c.include_none else []) + library.names
        else:
            styles = [library.get(c.style).name]  # an unknown name: the error lists the library's styles
        colours = list(dict.fromkeys(c.colours)) if c.colour == "auto" else [c.colour]

        from tqdm.auto import tqdm

        total = (len(styles) if len(styles) > 1 else 0) + len(colours)
        bar = tqdm(total=total, desc="hair selection", unit="cand", leave=False, dynamic_ncols=True)
        style_scores: dict[str, float] = {}
        colour_scores: dict[str, float] = {}
        images = None
        try:
            if len(styles) > 1:
                assert clip is not None
                style_albedo = colour_rgb(c.style_colour)
                scene = HairScene(imager, library, fit, style_albedo)
                scores, _ = self.score(clip, imager, prompt, scene,
                                       [(verts, faces, hair(s, style_albedo)) for s in styles], bar)
                style_scores = dict(zip(styles, scores.tolist()))
            style = styles[0] if len(styles) == 1 else max(style_scores, key=style_scores.__getitem__)
            if style == NONE:
                colours = []
            elif len(colours) > 1:
                assert clip is not None
                scene = HairScene(imager, library, fit, None)
                candidates = [(verts, faces, hair(style, colour_rgb(name))) for name in colours]
                scores, images = self.score(clip, imager, prompt, scene, candidates, bar)
                colour_scores = dict(zip(colours, scores.tolist()))
        finally:
            bar.close()
        colour = NONE if style == NONE else (colours[0] if len(colours) == 1
                                             else max(colour_scores, key=colour_scores.__getitem__))
        if style == NONE:
            representation.set_hair(None, style=NONE, colour=NONE, library=str(library.root))
        else:
            hv, hf, albedo = hair(style, colour_rgb(colour))  # type: ignore[misc]
            representation.set_hair(hv, hf, albedo, style=style, colour=colour, library=str(library.root))
        result = HairSelection(style, colour, style_scores, colour_scores)
        clip_score = None
        if clip is not None:
            if images is None or colour not in colours:
                images = imager.images(verts, faces, None if style == NONE else hair(style, colour_rgb(colour)))
            else:
                per = imager.num_images
                i = colours.index(colour)
                images = images[i * per: (i + 1) * per]
            clip_score = clip.score(images, prompt)
        self._record(ctx, stage, result, clip_score, str(library.root))

        def fmt(scores: dict[str, float]) -> str:
            return ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items(), key=lambda kv: -kv[1]))

        ctx.log(f"clip-hair: style '{style}'" + (f" ({fmt(style_scores)})" if style_scores else " (given)")
                + f", colour '{colour}'" + (f" ({fmt(colour_scores)})" if colour_scores else "")
                + f" for '{prompt}'")
        return result

    @torch.no_grad()
    def score(self, clip: ClipModel, imager: HairImager, prompt: str, scene: HairScene,
              candidates: list[tuple[Tensor, Tensor, Hair | None]], bar: Any = None) -> tuple[Tensor, Tensor]:
        """(scores [N], images of the candidates [N * imager.num_images, H, W, 3]) of candidates
        (head vertices, head faces, hair or None) against ``prompt``, the text drawn with ``scene``."""
        c = self.cfg
        per = imager.num_images
        embs, all_images = [], []
        for start in range(0, len(candidates), c.batch_size):
            batch = candidates[start: start + c.batch_size]
            images = cat_images([imager.images(v, f, h) for v, f, h in batch])
            embs.append(mean_embedding(clip, images, per))
            all_images.append(images)
            if bar is not None:
                bar.update(len(batch))
        e = torch.cat(embs).float()
        e_text = clip.text_embeddings([prompt], scene=scene)[0].to(e)
        scores = c.lambda_direct * (e @ F.normalize(e_text, dim=-1))
        if c.lambda_relative != 0:
            e_anchor = clip.text_embeddings([c.anchor_text], scene=scene)[0].to(e)
            d_e = F.normalize(e - e.mean(0, keepdim=True), dim=-1)
            d_t = F.normalize(e_text - e_anchor, dim=-1)
            scores = scores + c.lambda_relative * (d_e @ d_t)
        return scores, torch.cat(all_images)

    def _record(self, ctx: Any, stage: str, result: HairSelection, clip_score: float | None, library: str) -> None:
        ctx.metrics[f"{stage}/hair_style"] = result.style
        ctx.metrics[f"{stage}/hair_colour"] = result.colour
        for kind, scores in (("style", result.style_scores), ("colour", result.colour_scores)):
            for name, value in scores.items():
                ctx.metrics[f"{stage}/{kind}_score/{name}"] = round(float(value), 6)
        if clip_score is not None and math.isfinite(clip_score):
            ctx.metrics[f"{stage}/clip_score"] = round(clip_score, 5)
        run_dir = getattr(ctx, "run_dir", None)
        if run_dir is not None and hasattr(run_dir, "stage_dir"):
            record = {"style": result.style, "colour": result.colour, "library": library,
                      "style_scores": result.style_scores, "colour_scores": result.colour_scores,
                      "clip_score": clip_score}
            atomic_write_json(run_dir.stage_dir(stage) / "hair.json", record)


__all__ = ["DEFAULT_HAIR_VIEWS", "ClipHair", "ClipHairConfig", "HairImager", "HairScene", "HairSelection"]
