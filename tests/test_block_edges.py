"""``python -m headgen.bench.block_edges``: the block-edge ratio of image files."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np

from headgen.bench.block_edges import main


def test_blocky_and_smooth_images_and_an_unreadable_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 64x64, 8x8 blocks
    y, x = np.mgrid[0:64, 0:64]
    smooth = np.stack([x * 3, y * 3, (x + y) * 2], -1).astype(np.uint8)
    iio.imwrite(tmp_path / "blocks.png", blocks)
    iio.imwrite(tmp_path / "smooth.png", smooth)
    assert main([str(tmp_path / "blocks.png"), str(tmp_path / "smooth.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ratios = [[float(v) for v in line.split("x ")[1].split(", y ")] for line in lines]
    assert min(ratios[0]) > 1e6  # nothing changes inside a block
    assert all(abs(r - 1.0) < 0.05 for r in ratios[1]), ratios[1]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main([str(tmp_path / "bad.png")]) == 2
    assert "cannot read" in capsys.readouterr().err
