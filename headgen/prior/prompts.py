"""Prompt processing: view-dependent prompts, negative prompts, learned tokens, an embedding cache.

View-dependent prompts append a view phrase to the user's prompt for each camera's view label
(front / side / back / overhead); HeadSculpt's back views add a learned ``<back-view>`` token.
Learned tokens are loaded from a textual-inversion file (safetensors ``{token: [n, D] or [D]}``,
the format diffusers' ``load_textual_inversion`` reads). Text embeddings are cached in memory and
on disk, keyed by the text encoder (its caller's ``model_key``: where it was loaded from plus a
fingerprint of its files, see ``headgen.prior.load.text_cache_key``), the learned tokens' values and
the text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from headgen.cache import resolve_cache_dir
from headgen.digest import tensors_sha256
from headgen.errors import ConfigError, HeadgenError
from headgen.rundir import atomic_write

VIEWS = ("front", "side", "back", "overhead")


@dataclass
class PromptConfig:
    view_dependent: bool = True
    """Append a view phrase per camera (from its view label)."""
    templates: dict[str, str] = field(
        default_factory=lambda: {v: "{prompt}, " + v + " view" for v in VIEWS}
    )
    """Per view label, the text with {prompt} replaced by the user's prompt."""
    token_file: str | None = None
    """A textual-inversion file (safetensors {token: embedding}) whose tokens the templates may use."""
    cache_dir: str | None = "$HEADGEN_CACHE_DIR/text-embeddings"
    """On-disk cache of text embeddings ($HEADGEN_CACHE_DIR: its root, default ~/.cache/headgen; null: memory only)."""

    def __post_init__(self) -> None:
        missing = [v for v in VIEWS if v not in self.templates]
        if self.view_dependent and missing:
            raise ValueError(f"templates lacks the view label(s) {', '.join(missing)}")
        for view, text in self.templates.items():
            if "{prompt}" not in text:
                raise ValueError(f"templates.{view} must contain {{prompt}}, got {text!r}")


def text_views(cfg: PromptConfig, view_labels: list[str]) -> list[str | None]:
    """The view each of :func:`view_texts`' texts names (None: no view phrase)."""
    return list(view_labels) if cfg.view_dependent else [None] * len(view_labels)


def view_texts(cfg: PromptConfig, prompt: str, view_labels: list[str]) -> list[str]:
    """The text each camera of a batch is guided with."""
    if not cfg.view_dependent:
        return [prompt] * len(view_labels)
    out = []
    for label in view_labels:
        if label not in cfg.templates:
            raise HeadgenError(f"no prompt template for view label {label!r}; templates: {', '.join(cfg.templates)}")
        out.append(cfg.templates[label].replace("{prompt}", prompt))
    return out


def load_token_file(path: str | Path) -> dict[str, Tensor]:
    """Read learned token embeddings: safetensors ``{token: [D] or [n, D]}``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"token_file {path}: no such file (train one with the textual-inversion command)")
    try:
        tokens = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"token_file {path}: not a readable safetensors file ({exc})") from exc
    if not tokens:
        raise ConfigError(f"token_file {path}: holds no token embedding")
    return {k: (v[None] if v.dim() == 1 else v) for k, v in tokens.items()}


def add_tokens(tokenizer: Any, text_encoder: Any, tokens: dict[str, Tensor]) -> None:
    """Register learned tokens in a CLIP tokenizer + text encoder (multi-vector tokens expand to
    ``token``, ``token_1``, ... as in diffusers' textual inversion)."""
    emb_layer = text_encoder.get_input_embeddings()
    dim = emb_layer.weight.shape[1]
    for token, vectors in tokens.items():
        if vectors.shape[-1] != dim:
            raise ConfigError(
                f"learned token {token!r} has dimension {vectors.shape[-1]} but the text encoder expects {dim}: "
                "it was trained for another model"
            )
    names = [(tok, [tok] + [f"{tok}_{i}" for i in range(1, len(vec))], vec) for tok, vec in tokens.items()]
    tokenizer.add_tokens([n for _, ns, _ in names for n in ns])
    text_encoder.resize_token_embeddings(len(tokenizer))
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for _, ns, vec in names:
            ids = tokenizer.convert_tokens_to_ids(ns)
            weight[ids] = vec.to(weight)
    # Multi-vector tokens are written once in prompts and expanded here.
    tokenizer.headgen_multi = {tok: " ".join(ns) for tok, ns, _ in names if len(ns) > 1}


def expand_multi_vector(tokenizer: Any, text: str) -> str:
    for tok, expanded in getattr(tokenizer, "headgen_multi", {}).items():
        text = text.replace(tok, expanded)
    return text


class EmbeddingCache:
    """Memory + disk cache of per-text embeddings for one text encoder."""

    def __init__(self, model_key: str, cache_dir: str | None):
        self.model_key = model_key
        self.dir = resolve_cache_dir(cache_dir) / _digest(model_key)[:16] if cache_dir else None
        self.memory: dict[str, Tensor] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, text: str) -> Path | None:
        return None if self.dir is None else self.dir / f"{_digest(text)}.safetensors"

    def get(self, text: str) -> Tensor | None:
        if text in self.memory:
            self.hits += 1
            return self.memory[text]
        path = self._path(text)
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            try:
                value = load_file(str(path))["embedding"]
            except Exception:  # a corrupt cache entry is recomputed, and overwritten below
                return None
            self.memory[text] = value
            self.hits += 1
            return value
        return None

    def put(self, text: str, value: Tensor) -> None:
        value = value.detach().cpu().contiguous()
        self.memory[text] = value
        self.misses += 1
        path = self._path(text)
        if path is not None:
            from safetensors.torch import save_file

            atomic_write(path, lambda p: save_file({"embedding": value}, str(p)))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class TextEmbedder:
    """CLIP text embeddings (last hidden state, as SD's UNet consumes them), cached."""

    def __init__(self, tokenizer: Any, text_encoder: Any, model_key: str, cfg: PromptConfig):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        token_key = ""
        if cfg.token_file:
            tokens = load_token_file(cfg.token_file)
            add_tokens(tokenizer, text_encoder, tokens)
            token_key = "|tokens:" + tensors_sha256(tokens)[:16]  # exact values: a retrained token is new
        self.cache = EmbeddingCache(model_key + token_key, cfg.cache_dir)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        """[N, 77, D] embeddings for ``texts`` (duplicates computed once)."""
        unique = list(dict.fromkeys(texts))
        todo = [t for t in unique if self.cache.get(t) is None]
        if todo:
            ids = self.tokenizer(
                [expand_multi_vector(self.tokenizer, t) for t in todo], padding="max_length",
                max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt",
            ).input_ids
            device = next(self.text_encoder.parameters()).device
            out = self.text_encoder(ids.to(device))[0]
            for t, e in zip(todo, out):
                self.cache.put(t, e)
        device = next(self.text_encoder.parameters()).device
        table = {t: self.cache.get(t) for t in unique}
        return torch.stack([table[t] for t in texts]).to(device)
