"""DreamFace's coarse geometry: CLIP selection of identity coefficients (METHODS.md, step 1).

Candidates ``beta_i ~ N(0, scale^2 I)`` are drawn reproducibly from ``pool_seed`` (candidate ``i``
is the same whatever the batch size or pool size). Each candidate's bare geometry is rendered
from a few views (front, left 3/4, right 3/4) under ``lights`` directional lights; its embedding
``e_i`` is the renormalised mean of the CLIP image embeddings of those images. With ``e_t`` the
prompt's text embedding, ``e_anchor`` the anchor text's ("the face") and ``e_mean_mesh`` the
template head's image embedding, the relative score (AvatarCLIP) is

    s_i = l_d * (e_i~ . e_t~) + l_r * (De_i~ . De_t~),  De_i = e_i - e_mean_mesh,  De_t = e_t - e_anchor

(``~``: L2-normalised) and the argmax is selected.

The pool's embeddings depend on the prompt only through ``e_t``, so they are computed once and
cached on disk: shards of ``SHARD_SIZE`` candidates (embeddings + betas) under a directory keyed by
everything they depend on (head model, number of coefficients, scale, pool seed, views, lights,
resolution, camera, renderer backend, CLIP model). A later run, another prompt, or a larger pool
with the same seed reuses them; a damaged shard is recomputed with a warning.

Cost: per candidate one rasterisation of ``len(views)`` cameras (normals + coverage); the lights
are applied analytically to the normal images with the mesh renderer's formula
``albedo * (ambient + color * max(0, n . l))``, so lights cost nothing but CLIP passes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.cache import resolve_cache_dir
from headgen.errors import ConfigError
from headgen.prior.clip import ClipModel
from headgen.prior.clip_views import (
    DEFAULT_VIEWS,
    GeometryImager,
    cat_images,
    light_directions,
    mean_embedding,
    selection_embedding,
)
from headgen.prior.load import get_clip
from headgen.registry import register
from headgen.rundir import atomic_write
from selection.clip_config import ClipViewsConfig, ClipViewsSelector

SHARD_SIZE = 8192
"""Candidates per cache file."""
BETA_BLOCK = 1024
"""Candidates drawn per generator seed (candidate i's draw depends only on its block)."""
CACHE_FORMAT = 1


# ---------------------------------------------------------------------------------------- candidates
def _block_seed(pool_seed: int, block: int) -> int:
    digest = hashlib.sha256(f"clip-pool:{pool_seed}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


def candidate_betas(pool_seed: int, start: int, stop: int, num: int, scale: float = 1.0) -> Tensor:
    """Identity coefficients [stop - start, num] of candidates start..stop-1 (CPU, float32)."""
    if stop <= start:
        return torch.zeros(0, num)
    out = []
    for block in range(start // BETA_BLOCK, (stop - 1) // BETA_BLOCK + 1):
        g = torch.Generator().manual_seed(_block_seed(pool_seed, block))
        rows = torch.randn(BETA_BLOCK, num, generator=g)
        lo, hi = max(start, block * BETA_BLOCK), min(stop, (block + 1) * BETA_BLOCK)
        out.append(rows[lo - block * BETA_BLOCK: hi - block * BETA_BLOCK])
    return scale * torch.cat(out)


def relative_scores(e: Tensor, e_text: Tensor, e_mean_mesh: Tensor, e_anchor: Tensor, lambda_direct: float,
                    lambda_relative: float) -> Tensor:
    """AvatarCLIP's relative score of candidate embeddings ``e`` [N, D] (see the module docstring)."""
    e = F.normalize(e.float(), dim=-1)
    t = F.normalize(e_text.float(), dim=-1)
    d_e = F.normalize(e - e_mean_mesh.float(), dim=-1)
    d_t = F.normalize(e_text.float() - e_anchor.float(), dim=-1)
    return lambda_direct * (e @ t) + lambda_relative * (d_e @ d_t)


# ---------------------------------------------------------------------------------------- cache
def head_fingerprint(head: Any, num: int) -> str:
    """A hash of the head's name, topology, template and the identity modes in use."""
    h = hashlib.sha256(str(getattr(head, "name", "head")).encode())
    for t in (head.v_template, head.faces, head.identity_basis[:num]):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class PoolCache:
    """Shards ``shard-NNNNN.safetensors`` (``embeddings`` [n, D], ``betas`` [n, K]) in one directory
    per pool key; shard j holds the first n candidates of ``j * SHARD_SIZE ...`` (n may be less than
    a full shard when the pool was smaller: a larger pool extends it)."""

    def __init__(self, root: Path, key: dict[str, Any], label: str):
        self.key = key
        self.digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")[-40:] or "clip"
        self.dir = root / f"{slug}-{self.digest}"

    def shard_path(self, j: int) -> Path:
        return self.dir / f"shard-{j:05d}.safetensors"

    def _unusable(self, j: int, why: Any) -> None:
        path = self.shard_path(j)
        warnings.warn(f"CLIP pool cache {path} is unusable ({why}); recomputing it", stacklevel=3)

    def count(self, j: int) -> int:
        """Rows shard j claims to hold (from its header only; 0 when absent or unreadable)."""
        path = self.shard_path(j)
        if not path.exists():
            return 0
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("digest") != self.digest:
                    raise ValueError("it belongs to another pool key")
                return int(f.get_slice("embeddings").get_shape()[0])
        except Exception as exc:  # noqa: BLE001  (any damage: recompute, never crash)
            self._unusable(j, exc)
            return 0

    def load(self, j: int, betas: Tensor) -> Tensor | None:
        """Embeddings of shard j's candidates ``betas`` [n, K] (None, with a warning, when the file
        is damaged, holds fewer rows, or its candidates are not these)."""
        from safetensors.torch import load_file

        try:
            data = load_file(str(self.shard_path(j)))
            emb, stored = data["embeddings"], data["betas"]
            if emb.dim() != 2 or stored.dim() != 2 or stored.shape[0] != emb.shape[0]:
                raise ValueError("its tensors have unexpected shapes")
            if emb.shape[0] < len(betas) or stored.shape[1] != betas.shape[1]:
                raise ValueError(f"it holds {tuple(stored.shape)} candidates, {tuple(betas.shape)} needed")
            if not torch.equal(stored[: len(betas)], betas):
                raise ValueError("its candidates differ from the ones drawn now (random generator changed?)")
            if not torch.isfinite(emb).all():
                raise ValueError("it holds non-finite embeddings")
        except Exception as exc:  # noqa: BLE001
            self._unusable(j, exc)
            return None
        return emb[: len(betas)].clone()  # own the memory: the file is memory-mapped

    def save(self, j: int, betas: Tensor, embeddings: Tensor) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "key.json"
        if not meta.exists():  # for people browsing the cache
            atomic_write(meta, lambda p: p.write_text(json.dumps(self.key, indent=2) + "\n"))
        tensors = {"embeddings": embeddings.detach().float().cpu().contiguous(),
                   "betas": betas.detach().float().cpu().contiguous()}
        meta_data = {"digest": self.digest}
        atomic_write(self.shard_path(j), lambda p: save_file(tensors, str(p), metadata=meta_data))


# ---------------------------------------------------------------------------------------- selector
@dataclass
class ClipSelectConfig(ClipViewsConfig):
    pool_size: int = 1_000_000
    """Number of candidates (DreamFace samples 1M; use far fewer on CPU)."""
    pool_seed: int = 0
    """Seed of the candidate pool (the pool is the same for every prompt and run seed)."""
    cache_dir: str = "$HEADGEN_CACHE_DIR/clip-pools"
    """Where pool embeddings are cached ($HEADGEN_CACHE_DIR: its root, default ~/.cache/headgen); empty: no cache."""
    scale: float = 1.0
    """Standard deviation of the candidates' identity coefficients."""

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {self.pool_size}")
        super().__post_init__()
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


@dataclass
class Selection:
    """The outcome of a CLIP selection."""

    index: int
    beta: Tensor
    score: float
    """The relative score of the selected candidate."""
    cache: str
    """hit (nothing computed), miss (everything computed) or partial."""
    computed: int
    """Candidates rendered and embedded by this selection."""
    seconds_per_candidate: float | None = None


@dataclass
class _PoolStats:
    missing: int = 0
    computed: int = 0
    seconds: float = 0.0


@register("selector", "clip-select")
class ClipSelect(ClipViewsSelector):
    """DreamFace coarse selection: the candidate identity whose renders best match the prompt in CLIP."""

    Config = ClipSelectConfig
    cfg: ClipSelectConfig

    def pool_key(self, head: Any, num: int, clip: ClipModel, imager: GeometryImager) -> dict[str, Any]:
        """Everything the pool's embeddings depend on."""
        c = self.cfg
        return {"format": CACHE_FORMAT, "head": head_fingerprint(head, num), "num_identity": num,
                "scale": c.scale, "pool_seed": c.pool_seed, "views": [[float(x) for x in v] for v in c.views],
                "lights": c.lights,
                "resolution": c.resolution, "distance": c.distance, "fovy": c.fovy, "antialias": c.antialias,
                "backend": imager.backend_name(), "clip": clip.key, "shard_size": SHARD_SIZE,
                "beta_block": BETA_BLOCK}

    def cache(self, head: Any, num: int, clip: ClipModel, imager: GeometryImager) -> PoolCache | None:
        if not self.cfg.cache_dir:
            return None
        key = self.pool_key(head, num, clip, imager)
        return PoolCache(resolve_cache_dir(self.cfg.cache_dir), key, clip.key)

    # ------------------------------------------------------------------ the selector API
    def select(self, representation: Any, ctx: Any, generator: torch.Generator | None = None) -> Selection:
        """Set ``representation``'s identity to the best candidate. ``generator`` is unused: the
        pool is fixed by ``pool_seed`` so that its cache serves every run and prompt."""
        if not hasattr(representation, "set_identity") or not hasattr(representation, "beta"):
            raise ConfigError(
                "selector clip-select needs a representation with identity coefficients (parametric-mesh)"
            )
        prompt = self.cfg.prompt or ctx.config.prompt
        clip = get_clip(ctx, self.cfg.model)
        head = getattr(representation, "head", None) or ctx.head
        imager = self.imager(getattr(ctx, "device", "cpu"))
        result = self.run(head, representation.beta.numel(), clip, imager, prompt, ctx.log)
        representation.set_identity(result.beta)
        verts = head.vertices(result.beta.to(head.v_template.device))
        stage = getattr(ctx, "current_stage", "") or "select"
        clip_score = clip.score(imager.images(verts, head.faces), prompt)
        ctx.metrics[f"{stage}/clip_score"] = round(clip_score, 5)
        ctx.metrics[f"{stage}/clip_relative_score"] = round(result.score, 6)
        ctx.metrics[f"{stage}/selected_index"] = result.index
        ctx.metrics[f"{stage}/pool_size"] = self.cfg.pool_size
        ctx.metrics[f"{stage}/pool_cache"] = result.cache
        world = getattr(ctx, "state", {}).get("demo_world")
        if world is not None:
            # What the selection is worth under the demo prior: the same ground-truth scores for
            # candidates drawn at random from the pool.
            from headgen.prior.demo.metrics import random_candidate_scores

            betas = candidate_betas(self.cfg.pool_seed, 0, 32, representation.beta.numel(), self.cfg.scale)
            for key, value in random_candidate_scores(world, betas).items():
                ctx.metrics[f"{stage}/random_candidate_{key}"] = round(value, 5)
        ctx.log(f"clip-select: candidate {result.index} of {self.cfg.pool_size} for '{prompt}' "
                f"(relative score {result.score:.4f}, CLIP score {clip_score:.2f})")
        return result

    def run(self, head: Any, num: int, clip: ClipModel, imager: GeometryImager, prompt: str,
            log: Any = print) -> Selection:
        """Score the pool for ``prompt`` and return the argmax (no representation needed)."""
        c = self.cfg
        e_text, e_anchor = clip.text_embeddings([prompt, c.anchor_text])
        e_mean_mesh = selection_embedding(clip, head.v_template, head.faces, imager)
        stats = _PoolStats()
        best: tuple[int, float, Tensor] | None = None
        for start, betas, emb in self.pool(head, num, clip, imager, log, stats):
            s = relative_scores(emb.to(e_text.device), e_text, e_mean_mesh, e_anchor, c.lambda_direct,
                                c.lambda_relative)
            i = int(s.argmax())
            if best is None or float(s[i]) > best[1]:
                best = (start + i, float(s[i]), betas[i].clone())
        assert best is not None
        status = "hit" if stats.computed == 0 else "miss" if stats.computed == c.pool_size else "partial"
        per = stats.seconds / stats.computed if stats.computed else None
        return Selection(best[0], best[2], best[1], status, stats.computed, per)

    # ------------------------------------------------------------------ the pool
    def shards(self) -> list[tuple[int, int, int]]:
        n = self.cfg.pool_size
        return [(j, j * SHARD_SIZE, min(n, (j + 1) * SHARD_SIZE)) for j in range(math.ceil(n / SHARD_SIZE))]

    def pool(self, head: Any, num: int, clip: ClipModel, imager: GeometryImager, log: Any = print,
             stats: _PoolStats | None = None) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Yield (start, betas [n, K], embeddings [n, D]) shard by shard, from the cache where it
        has them, else computed (and cached). One shard is in memory at a time."""
        import time

        from tqdm.auto import tqdm

        c = self.cfg
        stats = stats if stats is not None else _PoolStats()
        cache = self.cache(head, num, clip, imager)
        shards = self.shards()
        counts = {j: min(hi - lo, cache.count(j)) if cache else 0 for j, lo, hi in shards}
        stats.missing = sum(hi - lo - counts[j] for j, lo, hi in shards)
        where = str(cache.dir) if cache else "cache disabled"
        if stats.missing == 0:
            log(f"reusing cached CLIP pool embeddings ({c.pool_size} candidates, {where})")
        else:
            log(f"computing CLIP pool embeddings for {stats.missing} of {c.pool_size} candidates ({where})")
        bar = None
        faces = head.faces.to(imager.device)
        for j, lo, hi in shards:
            betas = candidate_betas(c.pool_seed, lo, hi, num, c.scale)
            done = counts[j]
            emb = cache.load(j, betas[:done]) if (cache and done) else None
            if emb is None:
                done = 0
            if done < hi - lo:
                if bar is None:
                    bar = tqdm(total=stats.missing, desc="CLIP pool", unit="cand", leave=False,
                               dynamic_ncols=True)
                if done == 0 and counts[j]:  # found damaged only now: more work than announced
                    bar.total += counts[j]
                    bar.refresh()
                t0 = time.perf_counter()
                parts = [emb] if emb is not None else []
                for b0 in range(lo + done, hi, c.batch_size):
                    b1 = min(hi, b0 + c.batch_size)
                    parts.append(self.embed(head, faces, betas[b0 - lo: b1 - lo], clip, imager).cpu())
                    bar.update(b1 - b0)
                stats.computed += hi - lo - done
                stats.seconds += time.perf_counter() - t0
                emb = torch.cat(parts)
                if cache:
                    cache.save(j, betas, emb)
            yield lo, betas, emb
        if bar is not None:
            bar.close()

    @torch.no_grad()
    def embed(self, head: Any, faces: Tensor, betas: Tensor, clip: ClipModel,
              imager: GeometryImager) -> Tensor:
        """[n, D] pool embeddings of candidates ``betas`` [n, K]."""
        dev = imager.device
        images = cat_images([imager.images(head.vertices(b.to(dev)), faces) for b in betas])
        return mean_embedding(clip, images, imager.num_images)


__all__ = ["DEFAULT_VIEWS", "ClipSelect", "ClipSelectConfig", "GeometryImager", "PoolCache", "Selection",
           "candidate_betas", "light_directions", "mean_embedding", "relative_scores", "selection_embedding"]
