"""Differentiable gathers: ``src[idx]`` against ``headgen.gather.take`` (index_select), one run.

    python benchmarks/bench_gather.py [--threads 2] [--repeats 20]

For each size (sources x gathered rows, as in the rasterizer's attribute interpolation and
texture fetches) it prints the forward + backward time of both, their ratio, and how many of the
repeated backward passes gave gradients that differ bit-wise from the first.
"""

from __future__ import annotations

import argparse
import time

import torch

from headgen.gather import take

SIZES = [(6_000, 100_000, 3), (35_000, 400_000, 3), (65_536, 1_000_000, 3)]


def measure(gather, src: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, repeats: int) -> tuple[float, int]:
    first, differ = None, 0
    start = time.perf_counter()
    for _ in range(repeats):
        src.grad = None
        (gather(src, idx) * w).sum().backward()
        if first is None:
            first = src.grad.clone()
        elif not torch.equal(src.grad, first):
            differ += 1
    return (time.perf_counter() - start) / repeats * 1e3, differ


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats; ms per forward + backward")
    print(f"{'sources':>8s} {'rows':>9s} {'src[idx] ms':>12s} {'take ms':>8s} {'ratio':>6s} "
          f"{'differ src[idx]':>15s} {'differ take':>11s}")
    for n, m, c in SIZES:
        src = torch.randn(n, c, generator=g, requires_grad=True)
        idx = torch.randint(0, n, (m,), generator=g)
        w = torch.randn(m, c, generator=g)
        t_index, d_index = measure(lambda s, i: s[i], src, idx, w, args.repeats)
        t_take, d_take = measure(take, src, idx, w, args.repeats)
        print(f"{n:8d} {m:9d} {t_index:12.2f} {t_take:8.2f} {t_index / t_take:6.2f} "
              f"{d_index:>10d}/{args.repeats - 1:<4d} {d_take:>6d}/{args.repeats - 1}", flush=True)


if __name__ == "__main__":
    main()
