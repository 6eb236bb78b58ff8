"""UV unwrapping of an exported DMTet head: ``normal-charts`` (the default) against ``xatlas``.

The mesh is HeadArtist's initial DMTet (grid 128, per-vertex SDF set to the head model's signed
distance): the surface its export unwraps, about 200k faces. Per method it prints the unwrap time,
the number of UV islands, the share of a 1024 px atlas the faces cover (more is more texels per
face), the grid cells two faces cover (folds), and how well a baked colour field comes back: a
sine pattern 0.1 head heights in period baked into 1024 px and read back bilinearly at 200k
points drawn uniformly over the surface (PSNR against the field).

Usage: ``python benchmarks/bench_unwrap.py [--head ict-facekit|builtin] [--resolution 128] [--methods ...]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

# Runnable as a plain script from a checkout that is not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headgen.config import build  # noqa: E402
from headgen.config.typed import parse  # noqa: E402
from headgen.geometry.charts import face_adjacency, fold_cells  # noqa: E402
from headgen.geometry.mesh import Mesh  # noqa: E402
from headgen.geometry.unwrap import UNWRAP_METHODS, bake_field, unwrap  # noqa: E402


def field(x: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.sin(x * 60.0 + torch.tensor([0.0, 1.0, 2.0]))


def head_mesh(head_type: str, resolution: int) -> Mesh:
    from representations.dmtet import DMTet

    head = build("head", {"type": head_type}).load()
    dm = DMTet(parse(DMTet.Config, {"resolution": resolution, "geometry": "direct", "init": "head"}),
               SimpleNamespace(head=head))
    dm.ensure_initialized()
    mesh = dm.extract_mesh()
    return Mesh(mesh.v_pos.detach(), mesh.t_pos_idx)


def islands(t_tex_idx: torch.Tensor) -> int:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = face_adjacency(t_tex_idx.long())
    n = len(t_tex_idx)
    return int(connected_components(coo_matrix((torch.ones(len(a)).numpy(), (a.numpy(), b.numpy())),
                                               shape=(n, n)), directed=False)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--head", default="ict-facekit", choices=["ict-facekit", "builtin"])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--methods", nargs="+", default=list(UNWRAP_METHODS), choices=UNWRAP_METHODS)
    args = p.parse_args()
    torch.manual_seed(0)
    mesh = head_mesh(args.head, args.resolution)
    print(f"{args.head} head, DMTet grid {args.resolution}: {mesh.num_faces} faces")
    g = torch.Generator().manual_seed(0)
    corners = mesh.v_pos[mesh.t_pos_idx]
    area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=1)
    face = torch.multinomial(area, 200_000, replacement=True, generator=g)  # uniform over the surface
    bary = torch.rand(200_000, 3, generator=g)
    bary = bary / bary.sum(1, keepdim=True)
    want = field((mesh.v_pos[mesh.t_pos_idx[face]] * bary[..., None]).sum(1))
    print(f"{'method':<14} {'seconds':>8} {'islands':>8} {'covered':>8} {'fold cells':>10} {'bake PSNR':>10}")
    for method in args.methods:
        start = time.perf_counter()
        out = unwrap(mesh, args.size, method=method)
        seconds = time.perf_counter() - start
        uv = out.v_tex.double()[out.t_tex_idx]
        e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
        covered = float((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs().sum() / 2)
        folds = int(fold_cells(uv, torch.zeros(len(uv), dtype=torch.long), mesh.t_pos_idx)[0])
        tex = bake_field(out, field, args.size)
        at = (out.v_tex[out.t_tex_idx[face]] * bary[..., None]).sum(1)
        grid = torch.stack([at[:, 0] * 2 - 1, 1 - at[:, 1] * 2], -1)[None, None].float()
        got = F.grid_sample(tex.permute(2, 0, 1)[None], grid, align_corners=False)[0, :, 0].T
        psnr = float(10 * torch.log10(1 / (got - want).pow(2).mean()))
        print(f"{method:<14} {seconds:>8.1f} {islands(out.t_tex_idx):>8} {covered:>8.3f} {folds:>10} {psnr:>10.2f}")


if __name__ == "__main__":
    main()
