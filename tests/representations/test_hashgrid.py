import math

import numpy as np
import pytest
import torch

from headgen.encoding import HashField, HashGridConfig, HashGridEncoding, tcnn_available
from headgen.errors import HeadgenError

# Small enough to be fast, with both dense (coarse) and hashed (fine) levels.
SMALL = HashGridConfig(
    levels=6,
    features_per_level=2,
    log2_hashmap_size=12,
    base_resolution=4,
    max_resolution=96,
    backend="torch",
)



def reference_encoding(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """Straightforward per-level, per-corner evaluation with numpy uint32 hashing (independent of
    the vectorised int32 code)."""
    cfg = enc.cfg
    feats = cfg.features_per_level
    table = enc.params.view(-1, feats)
    b = cfg.per_level_scale
    out = []
    offset = 0
    for level in range(cfg.levels):
        scale = cfg.base_resolution * b**level - 1.0
        res = math.ceil(scale) + 1
        size = min((res**3 + 7) // 8 * 8, 2**cfg.log2_hashmap_size)
        pos = x * scale + 0.5
        base = torch.floor(pos)
        frac = pos - base
        acc = torch.zeros(x.shape[0], feats, dtype=table.dtype)
        for corner in range(8):
            o = torch.tensor([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])
            g = (base.long() + o).numpy().astype(np.uint64)
            if res**3 <= size:
                idx = g[:, 0] + g[:, 1] * res + g[:, 2] * res * res
            else:
                with np.errstate(over="ignore"):
                    h = g.astype(np.uint32) * np.array([1, 2654435761, 805459861], dtype=np.uint32)
                idx = (h[:, 0] ^ h[:, 1] ^ h[:, 2]).astype(np.uint64)
            idx = torch.as_tensor((idx % size).astype(np.int64)) + offset
            w = torch.where(o.bool(), frac, 1.0 - frac).prod(-1)
            acc = acc + w[:, None] * table[idx]
        out.append(acc)
        offset += size
    return torch.cat(out, dim=-1)


def random_encoding(cfg=SMALL, seed=0) -> HashGridEncoding:
    torch.manual_seed(seed)
    enc = HashGridEncoding(cfg)
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    return enc


def test_layout_follows_tiny_cuda_nn():
    enc = random_encoding()
    cfg = enc.cfg
    b = math.exp((math.log(96) - math.log(4)) / 5)
    assert cfg.per_level_scale == pytest.approx(b)
    sizes = []
    for level in range(6):
        res = math.ceil(4 * b**level - 1.0) + 1
        sizes.append(min((res**3 + 7) // 8 * 8, 2**12))
    assert enc.params.numel() == sum(sizes) * 2
    assert enc.output_dim == 12
    # Both kinds of level are present, so both index paths are exercised below.
    assert enc._n_dense >= 1 and enc._n_dense < cfg.levels


def test_matches_reference_and_gradients():
    enc = random_encoding()
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(1))
    y = enc(x)
    y_ref = reference_encoding(enc, x)
    assert y.shape == (500, 12)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)

    w = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * w).sum(), enc.params)
    (g_ref,) = torch.autograd.grad((y_ref * w).sum(), enc.params)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)
    assert g.abs().sum() > 0


def test_input_gradient_and_double_backward():
    enc = random_encoding()
    x = (torch.rand(64, 3, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.1).requires_grad_(True)
    y = enc(x).sum(-1)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    # The reference is plain autograd through the trilinear weights: an independent derivative
    # (finite differences would straddle cells of the fine levels).
    (gx_ref,) = torch.autograd.grad(reference_encoding(enc, x).sum(), x, create_graph=True)
    torch.testing.assert_close(gx, gx_ref, atol=1e-3, rtol=1e-4)
    assert gx.abs().mean() > 1.0  # random tables: a real, non-trivial gradient
    # Normals need d(grad_x)/d(params): the double backward must reach the table.
    (gp,) = torch.autograd.grad(gx.square().sum(), enc.params)
    (gp_ref,) = torch.autograd.grad(gx_ref.square().sum(), enc.params)
    assert gp.abs().sum() > 0
    torch.testing.assert_close(gp, gp_ref, atol=1e-2, rtol=1e-3)


def test_chunked_equals_unchunked_and_clamps_inputs():
    enc = random_encoding()
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(3)) * 1.4 - 0.2  # some outside [0,1]
    full = enc(x)
    enc.chunk_size = 37
    torch.testing.assert_close(enc(x), full)
    torch.testing.assert_close(full, reference_encoding(enc, x.clamp(0, 1)), atol=1e-5, rtol=1e-5)
    with pytest.raises(HeadgenError, match=r"\[N,3\]"):
        enc(torch.rand(10, 2))


def test_backend_selection():
    enc = HashGridEncoding(HashGridConfig(levels=2, log2_hashmap_size=8, base_resolution=2, max_resolution=4))
    assert enc.backend_for(torch.device("cpu")) == "torch"
    if tcnn_available():
        with pytest.raises(HeadgenError, match="CUDA"):
            HashGridEncoding(HashGridConfig(backend="tcnn", levels=2, log2_hashmap_size=8)).backend_for(
                torch.device("cpu")
            )
    else:
        with pytest.raises(HeadgenError, match="tiny-cuda-nn is not installed.*backend: torch"):
            HashGridEncoding(HashGridConfig(backend="tcnn"))


def test_invalid_configs_are_user_errors():
    with pytest.raises(HeadgenError, match="max_resolution"):
        HashGridEncoding(HashGridConfig(base_resolution=64, max_resolution=16))
    with pytest.raises(HeadgenError, match="log2_hashmap_size"):
        HashGridEncoding(HashGridConfig(log2_hashmap_size=40))


def test_hash_field_learns_a_function():
    torch.manual_seed(0)
    cfg = HashGridConfig(
        levels=6, log2_hashmap_size=14, base_resolution=4, max_resolution=32, backend="torch"
    )
    field = HashField(cfg, 1, width=32, depth=1)
    gen = torch.Generator().manual_seed(4)

    def target(p):
        return torch.sin(2 * math.pi * p[:, 0]) * torch.cos(2 * math.pi * p[:, 1]) + p[:, 2]

    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(200):
        x = torch.rand(4096, 3, generator=gen)  # fresh samples: measures fitting, not memorising
        loss = (field(x)[:, 0] - target(x)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_test = torch.rand(2048, 3, generator=gen)
    with torch.no_grad():
        err = (field(x_test)[:, 0] - target(x_test)).square().mean()
    assert err < 2e-3, float(err)  # the target's variance is ~0.33
