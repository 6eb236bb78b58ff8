"""Multi-resolution hash encoding (Instant-NGP) in pure PyTorch, with a tiny-cuda-nn backend.

Layout (shared by both backends, so a state dict moves between them)
--------------------------------------------------------------------
The encoding follows tiny-cuda-nn's ``HashGrid`` conventions. Level ``l`` has the scale
``s_l = base_resolution * b**l - 1`` with ``b = per_level_scale``; a point ``x`` in ``[0, 1]^3``
sits at ``x * s_l + 0.5`` in that level's lattice, whose side has ``ceil(s_l) + 1`` vertices. A
level whose lattice fits in the table is indexed densely (``i + j*res + k*res^2``), a finer level
by the spatial hash ``(i * 1) ^ (j * 2654435761) ^ (k * 805459861)`` (uint32 arithmetic); both are
taken modulo the level's table size, ``min(res^3 rounded up to 8, 2^log2_hashmap_size)``. All levels
live in one flat parameter ``params`` of ``sum(table sizes) * features_per_level`` floats
(entry-major), initialised uniformly in ``[-1e-4, 1e-4]``; the output is level-major
``[N, levels * features_per_level]`` with trilinear interpolation inside each level.

The torch backend gathers the 8 corners of every level at once (one ``embedding`` call, whose
backward is a dense ``index_add``); points are processed in chunks to bound memory. The tcnn
backend hands the same flat ``params`` to ``tinycudann.Encoding``; it is imported only when
chosen (``backend: tcnn``, or ``auto`` on a CUDA device when ``import tinycudann`` works).
Inputs are clamped to ``[0, 1]``; callers normalise their bounding box first.

Not verified here: bit-exact agreement of the two backends (no GPU with tiny-cuda-nn was
available when this was written); the layout follows tiny-cuda-nn's documented grid encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from headgen.errors import HeadgenError

# tiny-cuda-nn's hash primes (1, 2654435761, 805459861) as int32 values with the same low 32 bits.
_PRIME_Y32 = 2654435761 - 2**32
_PRIME_Z32 = 805459861
TCNN_INSTALL_HINT = (
    "install it with `pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch` "
    "(needs a CUDA toolkit), or use `backend: torch`"
)


@dataclass
class HashGridConfig:
    levels: int = 16
    """Number of resolution levels."""
    features_per_level: int = 2
    """Features stored per lattice vertex and level."""
    log2_hashmap_size: int = 19
    """log2 of the largest per-level table (entries); smaller saves memory and time on the CPU."""
    base_resolution: int = 16
    """Lattice resolution of the coarsest level."""
    max_resolution: int = 2048
    """Lattice resolution of the finest level (sets per_level_scale)."""
    backend: Literal["auto", "torch", "tcnn"] = "auto"
    """auto: tiny-cuda-nn on CUDA when importable, else pure PyTorch; tcnn: required (error if absent)."""

    @property
    def per_level_scale(self) -> float:
        if self.levels <= 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.levels - 1))

    @property
    def output_dim(self) -> int:
        return self.levels * self.features_per_level


def full_hashgrid() -> HashGridConfig:
    """Instant-NGP's full-size grid (16 levels x 2 features, 2^19 entries, resolution 16 to 2048):
    the default encoding of the NeRF density and colour fields and the DMTet colour field.
    Spelled out rather than taken from the class defaults, so those fields keep it if they change."""
    return HashGridConfig(
        levels=16, features_per_level=2, log2_hashmap_size=19, base_resolution=16, max_resolution=2048
    )


def tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return True


def _level_layout(cfg: HashGridConfig) -> tuple[list[float], list[int], list[int], list[int]]:
    """Per level: scale, lattice resolution, table size, table offset (in entries)."""
    log2_scale = math.log2(cfg.per_level_scale)
    scales, resolutions, sizes, offsets = [], [], [], []
    offset = 0
    for level in range(cfg.levels):
        scale = 2.0 ** (level * log2_scale) * cfg.base_resolution - 1.0
        res = int(math.ceil(scale)) + 1
        dense = min(res**3, 2**31 - 1)
        dense = (dense + 7) // 8 * 8
        size = min(dense, 2**cfg.log2_hashmap_size)
        scales.append(scale)
        resolutions.append(res)
        sizes.append(size)
        offsets.append(offset)
        offset += size
    return scales, resolutions, sizes, offsets


class _GatherRows(torch.autograd.Function):
    """``table[idx]`` whose backward is an ``index_add`` (the CPU embedding backward sorts the
    indices first, which is several times slower here). The backward is itself differentiable."""

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx)
        ctx.num_rows = table.shape[0]
        return table.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.num_rows, grad.shape[-1]).index_add(0, idx, grad)
        return out, None


def _gather_rows(table: Tensor, idx: Tensor) -> Tensor:
    return _GatherRows.apply(table, idx)


class HashGridEncoding(nn.Module):
    """``[N,3]`` points in ``[0,1]^3`` -> ``[N, levels * features_per_level]`` features."""

    def __init__(self, cfg: HashGridConfig, chunk_size: int = 65536) -> None:
        super().__init__()
        for name in ("levels", "features_per_level", "base_resolution", "max_resolution"):
            if getattr(cfg, name) < 1:
                raise HeadgenError(f"hash grid: {name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.max_resolution < cfg.base_resolution:
            raise HeadgenError(
                f"hash grid: max_resolution ({cfg.max_resolution}) must be >= "
                f"base_resolution ({cfg.base_resolution})"
            )
        if not 4 <= cfg.log2_hashmap_size <= 30:
            raise HeadgenError(
                f"hash grid: log2_hashmap_size must be in [4, 30], got {cfg.log2_hashmap_size}"
            )
        if cfg.backend == "tcnn" and not tcnn_available():
            raise HeadgenError(
                f"hash grid backend 'tcnn': tiny-cuda-nn is not installed; {TCNN_INSTALL_HINT}"
            )
        self.cfg = cfg
        self.chunk_size = chunk_size
        scales, resolutions, sizes, offsets = _level_layout(cfg)
        self.level_resolutions = resolutions
        self.register_buffer("_scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        dense = [r**3 <= size for r, size in zip(resolutions, sizes)]
        # Coarse levels are dense, fine ones hashed (resolution grows with the level).
        self._n_dense = sum(dense)
        if dense != [True] * self._n_dense + [False] * (cfg.levels - self._n_dense):
            raise AssertionError("hash grid: dense levels must precede hashed ones")
        self._hash_mask = 2**cfg.log2_hashmap_size - 1
        if sum(sizes) >= 2**31:
            raise HeadgenError("hash grid: the tables are too large for int32 indexing")
        self.register_buffer("_res32", torch.tensor(resolutions, dtype=torch.int32), persistent=False)
        self.register_buffer("_sizes32", torch.tensor(sizes, dtype=torch.int32), persistent=False)
        self.register_buffer("_offsets32", torch.tensor(offsets, dtype=torch.int32), persistent=False)
        n_entries = sum(sizes)
        self.params = nn.Parameter(torch.empty(n_entries * cfg.features_per_level).uniform_(-1e-4, 1e-4))
        self._tcnn: list = []  # kept out of the module tree so the state dict holds only `params`

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def backend_for(self, device: torch.device) -> str:
        """The backend used for inputs on ``device``."""
        if self.cfg.backend == "tcnn":
            if device.type != "cuda":
                raise HeadgenError(
                    f"hash grid backend 'tcnn' needs a CUDA device, but the input is on '{device}'; "
                    "use `backend: torch` (or `auto`) on the CPU"
                )
            return "tcnn"
        if self.cfg.backend == "auto" and device.type == "cuda" and tcnn_available():
            return "tcnn"
        return "torch"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[-1] != 3:
            raise HeadgenError(f"hash grid expects points [N,3], got {tuple(x.shape)}")
        x = x.clamp(0.0, 1.0)
        if self.backend_for(x.device) == "tcnn":
            return self._forward_tcnn(x)
        if x.shape[0] <= self.chunk_size:
            return self._forward_torch(x)
        return torch.cat([self._forward_torch(c) for c in x.split(self.chunk_size)], dim=0)

    # ------------------------------------------------------------------ torch
    def _forward_torch(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        levels, feats = self.cfg.levels, self.cfg.features_per_level
        pos = x.float()[:, None, :] * self._scales[None, :, None] + 0.5  # [N,L,3]
        base_f = torch.floor(pos)
        frac = pos - base_f
        # int32 lattice coordinates: the products below wrap modulo 2^32 exactly like tcnn's
        # uint32 hash, and half-width indices halve the memory traffic of this gather-bound code.
        base = base_f.to(torch.int32)
        # Per-axis terms of the two lattice planes around the point ([N,l,2] each) are combined by
        # broadcasting into the 8 corners (corner c = x + 2y + 4z), instead of hashing 8x3 values.
        parts = []
        nd = self._n_dense
        if nd:
            b = base[:, :nd]
            res = self._res32[:nd]
            cx = torch.stack([b[..., 0], b[..., 0] + 1], dim=-1)
            cy = torch.stack([b[..., 1], b[..., 1] + 1], dim=-1) * res[None, :, None]
            cz = torch.stack([b[..., 2], b[..., 2] + 1], dim=-1) * (res * res)[None, :, None]
            idx = cz[..., :, None, None] + cy[..., None, :, None] + cx[..., None, None, :]
            idx = torch.remainder(idx.view(n, nd, 8), self._sizes32[None, :nd, None])
            parts.append(idx)
        if nd < levels:
            b = base[:, nd:]
            hx = torch.stack([b[..., 0], b[..., 0] + 1], dim=-1)  # prime 1
            hy = torch.stack([b[..., 1], b[..., 1] + 1], dim=-1) * _PRIME_Y32
            hz = torch.stack([b[..., 2], b[..., 2] + 1], dim=-1) * _PRIME_Z32
            idx = hz[..., :, None, None] ^ hy[..., None, :, None] ^ hx[..., None, None, :]
            # Hashed levels have power-of-two tables, so the modulo is a mask (also right for the
            # negative int32 views of uint32 values).
            parts.append(idx.view(n, levels - nd, 8) & self._hash_mask)
        idx = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        # int64 for the gather: CPU index_add with int32 indices takes a much slower path.
        idx = (idx + self._offsets32[None, :, None]).long()
        values = _gather_rows(self.params.view(-1, feats), idx.reshape(-1)).view(n * levels, 8, feats)
        wx = torch.stack([1.0 - frac[..., 0], frac[..., 0]], dim=-1)
        wy = torch.stack([1.0 - frac[..., 1], frac[..., 1]], dim=-1)
        wz = torch.stack([1.0 - frac[..., 2], frac[..., 2]], dim=-1)
        w = (wz[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]).reshape(
            n * levels, 1, 8
        )
        return torch.bmm(w, values).view(n, levels * feats)

    # ------------------------------------------------------------------ tcnn
    def _forward_tcnn(self, x: Tensor) -> Tensor:
        if not self._tcnn:
            import tinycudann as tcnn

            cfg = self.cfg
            enc = tcnn.Encoding(
                3,
                {
                    "otype": "HashGrid",
                    "n_levels": cfg.levels,
                    "n_features_per_level": cfg.features_per_level,
                    "log2_hashmap_size": cfg.log2_hashmap_size,
                    "base_resolution": cfg.base_resolution,
                    "per_level_scale": cfg.per_level_scale,
                },
                dtype=torch.float32,
            )
            if enc.params.numel() != self.params.numel():
                raise HeadgenError(
                    f"hash grid: tiny-cuda-nn allocates {enc.params.numel()} parameters but the torch "
                    f"layout has {self.params.numel()}; this tiny-cuda-nn version lays the grid out "
                    "differently, use backend: torch"
                )
            self._tcnn.append(enc)
        enc = self._tcnn[0]
        enc.params = self.params  # share the one parameter (the state dict stays backend-independent)
        return enc(x).float()


class MLP(nn.Module):
    """A plain ReLU MLP: ``depth`` hidden layers of ``width`` units, then a linear output."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 64, depth: int = 2, bias: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width, bias=bias), nn.ReLU(inplace=True)]
            d = width
        layers.append(nn.Linear(d, out_dim, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class HashField(nn.Module):
    """Hash encoding + MLP on world points in the box ``center +- half_size`` (cube)."""

    def __init__(self, encoding: HashGridConfig, out_dim: int, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.encoding = HashGridEncoding(encoding)
        self.mlp = MLP(self.encoding.output_dim, out_dim, width, depth)

    def forward(self, x_unit: Tensor) -> Tensor:
        """``x_unit`` [N,3] in [0,1]^3 -> [N, out_dim]."""
        return self.mlp(self.encoding(x_unit))


__all__ = ["MLP", "HashField", "HashGridConfig", "HashGridEncoding", "tcnn_available"]
