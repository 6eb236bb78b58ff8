"""CLIP image/text embeddings and the CLIP score, behind one small interface.

:class:`PretrainedClip` wraps a transformers ``CLIPModel`` with its tokenizer and image processor
(loaded through the model zoo); the demo prior has its own analogue
(:class:`headgen.prior.demo.clip.DemoClip`); :func:`headgen.prior.load.get_clip` returns the one
the run's prior calls for.

Images are ``[B, H, W, 3]`` floats in [0, 1]. Preprocessing is done in torch (no torchvision, no
PIL round trip): resize the shortest edge to the processor's size (bicubic, antialiased), centre
crop to its crop size, normalise with its mean/std. Embeddings are L2-normalised float32.
The CLIP score of images against a text is ``100 * cos(image, text)`` averaged over the images
(no clamping at 0).

``text_embeddings`` takes an optional :class:`TextScene`: how a selector draws its candidates.
A real CLIP ignores it; a CLIP analogue that embeds a text through renders of the head the text
describes (the demo CLIP) draws that head with it, so that texts and candidates are compared on
the same kind of image (bare geometry for identity selection, head and hair for hair selection).
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.config.recipe import ModelSpec
from headgen.errors import HeadgenError, ModelNotFoundError
from headgen.models.fingerprint import weights_fingerprint
from headgen.models.zoo import load_component


@dataclass
class TextSubject:
    """A head a text describes, as a CLIP analogue knows it (the demo prior's target)."""

    vertices: Tensor
    """[V,3] the head's vertices (the head model's topology)."""
    faces: Tensor
    """[F,3] its faces."""
    hairstyle: str = "none"
    """Name of its hairstyle ("none": bald)."""
    hair_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Its hair's albedo."""


@runtime_checkable
class TextScene(Protocol):
    """How a selector draws a candidate, applied to the head a text describes."""

    key: str
    """Identifies the drawing (views, lights, resolution, hair library, ...) for caches of text embeddings."""

    def draw(self, subject: TextSubject) -> Tensor:
        """[M, H, W, 3] images in [0, 1] of ``subject``, drawn exactly as the selector draws a candidate."""
        ...


@runtime_checkable
class ClipModel(Protocol):
    """What CLIP selection and CLIP scoring need from a CLIP."""

    key: str
    """Identifies the image embedding function (for caches of image embeddings)."""

    def image_embeddings(self, images: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> [B, D], L2-normalised."""
        ...

    def text_embeddings(self, texts: Sequence[str], scene: TextScene | None = None) -> Tensor:
        """N texts -> [N, D], L2-normalised. ``scene``: how the caller draws candidates (see the
        module docstring); CLIPs that read text ignore it."""
        ...

    def score(self, images: Tensor, text: str) -> float:
        """CLIP score: 100 * cosine(image, text), averaged over the images."""
        ...


def clip_score(model: ClipModel, images: Tensor, text: str) -> float:
    """100 * cos(image embedding, text embedding), averaged over the batch of images."""
    img = model.image_embeddings(images)
    txt = model.text_embeddings([text])[0].to(img)
    return float(100.0 * (img @ txt).mean())


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[-1] != 3:
        raise HeadgenError(f"CLIP images must be [B, H, W, 3] in [0, 1], got {tuple(images.shape)}")


def _features(out: Any) -> Tensor:
    """The projected features of ``get_image_features``/``get_text_features``: a tensor in
    transformers < 5, an output object whose ``pooler_output`` holds them in transformers 5."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise TypeError(f"unexpected CLIP feature output of type {type(out).__name__}")


def _size_field(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


class PretrainedClip:
    """A transformers CLIP (image and text towers) with torch preprocessing."""

    def __init__(self, model: Any, tokenizer: Any, processor: Any, key: str, chunk_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.key = key
        self.chunk_size = chunk_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        crop = getattr(processor, "crop_size", None)
        size = getattr(processor, "size", None)
        ch, cw = _size_field(crop, "height"), _size_field(crop, "width")
        self.do_center_crop = bool(getattr(processor, "do_center_crop", True)) and bool(ch and cw)
        self.crop = (ch, cw) if self.do_center_crop else None
        self.shortest_edge = _size_field(size, "shortest_edge")
        self.fixed_size = (_size_field(size, "height"), _size_field(size, "width"))
        if not self.shortest_edge and not all(self.fixed_size) and self.crop is None:
            raise HeadgenError(f"CLIP image processor of {key} has neither a size nor a crop size")
        self.mean = torch.tensor(list(processor.image_mean), dtype=torch.float32, device=self.device)
        self.std = torch.tensor(list(processor.image_std), dtype=torch.float32, device=self.device)
        self._text_cache: dict[str, Tensor] = {}
        eos_model = getattr(getattr(model.config, "text_config", None), "eos_token_id", None)
        eos_tokenizer = getattr(tokenizer, "eos_token_id", None)
        # The text tower pools at the first end-of-text token (or, legacy id 2, at the largest id);
        # an id the tokenizer never emits pools at position 0, the same for every text.
        if eos_model not in (None, 2, eos_tokenizer):
            warnings.warn(
                f"CLIP {key}: the text model's eos_token_id ({eos_model}) is not the tokenizer's "
                f"({eos_tokenizer}); every text will get the same embedding. Fix text_config.eos_token_id "
                "in the model's config.json", stacklevel=2)

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, images: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> normalised pixel values [B, 3, h, w] for the vision tower."""
        _check_images(images)
        x = images.to(self.device, torch.float32).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        if self.shortest_edge:
            s = self.shortest_edge / min(h, w)
            new = (max(1, round(h * s)), max(1, round(w * s)))
        elif all(self.fixed_size):
            new = self.fixed_size  # type: ignore[assignment]
        else:
            new = self.crop  # type: ignore[assignment]
        if tuple(new) != (h, w):
            # The reference processor resamples 8-bit images bicubically, which clips overshoot.
            x = F.interpolate(x, size=tuple(new), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp(0, 1)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if h < ch or w < cw:  # as the reference processor: pad with zeros when too small
                ph, pw = max(0, ch - h), max(0, cw - w)
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
                h, w = x.shape[-2:]
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top: top + ch, left: left + cw]
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    # ------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def image_embeddings(self, images: Tensor) -> Tensor:
        _check_images(images)
        out = []
        for chunk in images.split(self.chunk_size):
            pixels = self.preprocess(chunk).to(self.dtype)
            feats = _features(self.model.get_image_features(pixel_values=pixels))
            out.append(F.normalize(feats.float(), dim=-1))
        return torch.cat(out) if out else images.new_zeros(0, self.model.config.projection_dim)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str], scene: TextScene | None = None) -> Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(todo), self.chunk_size):
            part = todo[start: start + self.chunk_size]
            tok = self.tokenizer(part, padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt")
            ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
            feats = _features(self.model.get_text_features(input_ids=ids, attention_mask=mask))
            for text, e in zip(part, F.normalize(feats.float(), dim=-1)):
                self._text_cache[text] = e
        if not texts:
            return torch.zeros(0, self.model.config.projection_dim, device=self.device)
        return torch.stack([self._text_cache[t] for t in texts])

    def score(self, images: Tensor, text: str) -> float:
        return clip_score(self, images, text)


# ---------------------------------------------------------------------------------------- loading
def model_key(spec: ModelSpec, dtype: torch.dtype, loaded: Any = None) -> str:
    """A string that identifies a model's weights (and precision) for caches (the CLIP pools): where
    they were loaded from, the variant and dtype, and a fingerprint of the files (or the Hub commit),
    so that other weights at the same path are not served old embeddings. ``loaded``: the loaded
    CLIPModel (its Hub commit). Weights that cannot be identified get a key of their own, never
    reused (with a warning)."""
    where = spec.local_dir or spec.hub_id
    fingerprint = weights_fingerprint(spec, ("clip",), loaded)
    if fingerprint is None:
        warnings.warn(f"CLIP {where}: cannot tell which weights were loaded, so nothing cached with them is "
                      "reused (its CLIP pool is recomputed)", stacklevel=2)
        fingerprint = f"unidentified-{uuid.uuid4().hex}"
    # The fingerprint goes first: the pool cache names its folder after the key's tail (the model).
    return (f"clip[{fingerprint}]:{where}/{spec.subfolder or ''}@{spec.revision or ''}:{spec.variant or ''}:"
            f"{str(dtype).removeprefix('torch.')}")


def load_clip(ctx_or_models: Any, name: str, device: torch.device | str = "cpu") -> PretrainedClip:
    """Load CLIP model ``name`` (a key of the recipe's ``models:``) through the model zoo.

    ``ctx_or_models``: a run context (its ``config.models`` is used) or a mapping name -> ModelSpec.
    """
    models = ctx_or_models.config.models if hasattr(ctx_or_models, "config") else ctx_or_models
    if name not in models:
        raise ModelNotFoundError(
            f"CLIP model '{name}' is not in the recipe's models: ({', '.join(sorted(models))}); "
            "add it to configs/models.yaml or the recipe"
        )
    spec = models[name]
    if spec.kind != "clip":
        raise ModelNotFoundError(f"model '{name}' has kind '{spec.kind}', but a CLIP needs kind clip")
    model = load_component(name, spec, "clip", device)
    tokenizer = load_component(name, spec, "clip_tokenizer", device)
    processor = load_component(name, spec, "clip_processor", device)
    dtype = next(model.parameters()).dtype
    return PretrainedClip(model, tokenizer, processor, model_key(spec, dtype, model))


__all__ = ["ClipModel", "PretrainedClip", "TextScene", "TextSubject", "clip_score", "load_clip",
           "model_key"]
