"""Block structure of an image: does it change on an 8-pixel grid (the trace of an 8x8
autoencoder) and not inside it?

``python -m headgen.bench.block_edges IMAGE [IMAGE ...]`` prints, per image, the block-edge ratio
in x and in y: the mean absolute neighbour difference across 8-pixel block edges over that inside
blocks. 1 means no block structure; 8x8 piecewise-constant images give a ratio of order 1e9.
"""

from __future__ import annotations

import argparse
import sys

import torch


def block_edge_ratio(img: torch.Tensor, block: int = 8) -> tuple[float, float]:
    """(x, y) ratio for an image [..., H, W] (channels first, if any)."""
    out = []
    for dim in (-1, -2):
        d = img.float().diff(dim=dim).abs()
        idx = torch.arange(d.shape[dim])
        edge = idx % block == block - 1
        inside = d.index_select(dim, idx[~edge]).mean()
        out.append(float(d.index_select(dim, idx[edge]).mean() / inside.clamp_min(1e-12)))
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    import imageio.v3 as iio

    p = argparse.ArgumentParser(prog="python -m headgen.bench.block_edges", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    args = p.parse_args(argv)
    for path in args.images:
        try:
            img = torch.from_numpy(iio.imread(path)).float()
        except (OSError, ValueError) as e:
            print(f"error: cannot read {path}: {e}", file=sys.stderr)
            return 2
        rx, ry = block_edge_ratio(img.movedim(-1, 0) if img.ndim == 3 else img)
        print(f"{path}: block-edge ratio x {rx:.3f}, y {ry:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
