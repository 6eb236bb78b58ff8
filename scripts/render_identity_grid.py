"""Render random identities of the built-in head in a grid (a visual check of the identity basis).

    python scripts/render_identity_grid.py outputs/identity_grid.png [--count 20] [--seed 0]

Each cell shows one identity (coefficients ~ N(0, 1), seeded) from the front and from a 3/4 view,
shaded with a small numpy z-buffer rasterizer (no dependency on the project's renderer), and the
MediaPipe contour landmarks as dots on the front view. Options draw expressions instead
(``--expressions``) to check the blendshapes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _rotation(azimuth: float, elevation: float) -> np.ndarray:
    """World-to-view rotation for a camera at (azimuth, elevation) degrees (y-up, front = +z)."""
    a, e = np.deg2rad(azimuth), np.deg2rad(elevation)
    ry = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    return rx @ ry


def render(v: np.ndarray, f: np.ndarray, azimuth: float = 0.0, elevation: float = 0.0, size: int = 256,
           extent: tuple[float, float, float, float] = (-0.62, 0.62, -0.98, 0.60),
           points: np.ndarray | None = None) -> np.ndarray:
    """Orthographic Gouraud-shaded render ``[H, W, 3]`` in [0, 1] of mesh ``(v, f)``.

    ``extent`` = (xmin, xmax, ymin, ymax) of the view plane; ``points [N,3]`` are drawn as red
    dots where visible.
    """
    rot = _rotation(azimuth, elevation)
    pv = v @ rot.T
    x0, x1, y0, y1 = extent
    W = size
    H = int(round(size * (y1 - y0) / (x1 - x0)))
    sx = (pv[:, 0] - x0) / (x1 - x0) * W
    sy = (y1 - pv[:, 1]) / (y1 - y0) * H
    depth = -pv[:, 2]  # smaller is nearer
    n = vertex_normals(v, f) @ rot.T
    light = np.array([-0.35, 0.45, 0.82])
    light /= np.linalg.norm(light)
    shade = 0.22 + 0.78 * np.clip(n @ light, 0.0, 1.0) + 0.12 * np.clip(n[:, 2], 0, 1) ** 8
    zbuf = np.full(H * W, np.inf)
    ibuf = np.zeros(H * W)
    tri_x, tri_y, tri_z = sx[f], sy[f], depth[f]
    area = (tri_x[:, 1] - tri_x[:, 0]) * (tri_y[:, 2] - tri_y[:, 0]) - (tri_x[:, 2] - tri_x[:, 0]) * (
        tri_y[:, 1] - tri_y[:, 0])
    front = area < 0  # image y points down, so front faces are clockwise here
    bx0 = np.floor(tri_x.min(1)).astype(int)
    by0 = np.floor(tri_y.min(1)).astype(int)
    span = np.maximum(np.ceil(tri_x.max(1)) - bx0, np.ceil(tri_y.max(1)) - by0).astype(int) + 1
    for k in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        sel = np.nonzero(front & (span <= k) & (span > k // 2 if k > 2 else True))[0]
        if sel.size == 0:
            continue
        ox, oy = np.meshgrid(np.arange(k), np.arange(k))
        px = bx0[sel, None] + ox.ravel()[None] + 0.5
        py = by0[sel, None] + oy.ravel()[None] + 0.5
        X, Y = tri_x[sel], tri_y[sel]
        d = area[sel, None]
        w0 = ((X[:, 1, None] - px) * (Y[:, 2, None] - py) - (X[:, 2, None] - px) * (Y[:, 1, None] - py)) / d
        w1 = ((X[:, 2, None] - px) * (Y[:, 0, None] - py) - (X[:, 0, None] - px) * (Y[:, 2, None] - py)) / d
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6) & (px >= 0) & (px < W) & (py >= 0) & (py < H)
        ti, pi = np.nonzero(inside)
        z = w0[ti, pi] * tri_z[sel[ti], 0] + w1[ti, pi] * tri_z[sel[ti], 1] + w2[ti, pi] * tri_z[sel[ti], 2]
        s = shade[f[sel[ti]]]
        val = w0[ti, pi] * s[:, 0] + w1[ti, pi] * s[:, 1] + w2[ti, pi] * s[:, 2]
        pix = (py[ti, pi].astype(int)) * W + px[ti, pi].astype(int)
        order = np.argsort(-z, kind="stable")  # far first, so the nearest write wins
        pix, z, val = pix[order], z[order], val[order]
        better = z < zbuf[pix]
        pix, z, val = pix[better], z[better], val[better]
        # Duplicate pixels within one batch: the last write (the nearest) wins.
        zbuf[pix] = z
        ibuf[pix] = val
    img = np.ones((H * W, 3)) * 0.96
    hit = np.isfinite(zbuf)
    skin = np.array([0.93, 0.80, 0.70])
    img[hit] = np.clip(ibuf[hit, None] * skin, 0, 1)
    img = img.reshape(H, W, 3)
    if points is not None:
        pp = points @ rot.T
        px = ((pp[:, 0] - x0) / (x1 - x0) * W).astype(int)
        py = ((y1 - pp[:, 1]) / (y1 - y0) * H).astype(int)
        zb = zbuf.reshape(H, W)
        for X, Y, Z in zip(px, py, -pp[:, 2]):
            if 0 <= X < W and 0 <= Y < H and Z <= zb[Y, X] + 0.01:
                img[max(Y - 1, 0):Y + 1, max(X - 1, 0):X + 1] = (0.85, 0.05, 0.05)
    return img


def identity_grid(out: Path, count: int = 20, seed: int = 0, size: int = 200, cols: int = 5,
                  expressions: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headgen.heads.builtin import load_builtin_head

    head = load_builtin_head()
    faces = head.faces.numpy()
    rng = np.random.default_rng(seed)
    cells = []
    if expressions:
        for name in head.expression_names[:count]:
            w = head.expression_vector({name: 1.0}).numpy()
            cells.append((name, head.vertices(expression=w)))
    else:
        cells.append(("mean", head.v_template.numpy()))
        for i in range(count - 1):
            beta = rng.standard_normal(head.num_identity).astype(np.float32)
            cells.append((f"#{i + 1}", head.vertices(beta)))
    rows = int(np.ceil(len(cells) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 2.5), dpi=100)
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, (label, v) in zip(np.atleast_1d(axes).ravel(), cells):
        lm = head.landmarks(v)
        front = render(v, faces, 0.0, 0.0, size, points=lm)
        side = render(v, faces, 55.0, 0.0, size)
        ax.imshow(np.concatenate([front, side], axis=1))
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output PNG path")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=200, help="pixels per view")
    ap.add_argument("--expressions", action="store_true", help="show the expression blendshapes instead")
    args = ap.parse_args(argv)
    path = identity_grid(args.out, args.count, args.seed, args.size, expressions=args.expressions)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
