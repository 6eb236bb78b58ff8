"""Geometry speed: marching tetrahedra, the hash encoding, mesh SDF, DMTet initialisation.

Prints, for the chosen device:

Times are the best of ``--repeats`` runs (shared machines make medians noisy).

* ``marching tets`` at grid 64 and 128 on a head-sized ellipsoid SDF with per-vertex offsets:
  the DMTet path (cubes that cross the surface -> their tetrahedra -> marching tetrahedra), forward
  and forward+backward (gradients to SDF and offsets) in ms, plus the same over all 6 R^3
  tetrahedra for comparison;
* ``hash grid`` throughput in points/s for forward and forward+backward (gradients to the table)
  for the default 16-level, 2^19 encoding and a small CPU-sized one;
* ``mesh sdf`` points/s of :class:`~headgen.geometry.sdf.MeshSDF` on the built-in head's mesh
  over a 64^3 grid, and the DMTet head initialisation time at grid 64 (direct).

Usage: ``python benchmarks/bench_geometry.py [--device cpu|cuda] [--threads N] [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

# Runnable as a plain script from a checkout that is not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headgen.encoding import HashGridConfig, HashGridEncoding  # noqa: E402
from headgen.geometry.marching_tets import marching_tets  # noqa: E402
from headgen.geometry.tets import tet_grid  # noqa: E402


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best milliseconds of ``fn`` over ``repeats`` runs after one warm-up (the minimum, since the
    CPU machines these run on are shared and the median is dominated by other people's load)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


def bench_marching(res: int, device: torch.device, repeats: int) -> None:
    grid = tet_grid(res, device)
    radii = torch.tensor([0.36, 0.5, 0.45], device=device) / 0.75  # the box is [-1, 1]^3 here
    base_sdf = ((grid.vertices / radii).norm(dim=-1) - 1.0) * radii.min()
    sdf = base_sdf.clone().requires_grad_(True)
    offsets = torch.zeros_like(grid.vertices, requires_grad=True)

    def extract() -> tuple[torch.Tensor, torch.Tensor]:
        inside = sdf.detach() < 0
        tets = grid.surface_tets(inside)
        used, local = torch.unique(tets, return_inverse=True)
        return marching_tets(grid.vertices[used] + offsets[used], sdf[used], local.reshape(-1, 4))

    def fwd() -> None:
        with torch.no_grad():
            extract()

    def fwd_bwd() -> None:
        v, _ = extract()
        v.square().sum().backward()

    verts, faces = extract()
    ms_f = timed(fwd, repeats, device)
    ms_fb = timed(fwd_bwd, repeats, device)
    ms_all = timed(lambda: marching_tets(grid.vertices, base_sdf, grid.tets), max(1, repeats // 2), device)
    print(
        f"marching tets  grid {res:4d}: {faces.shape[0]:7d} faces, {verts.shape[0]:7d} verts | "
        f"fwd {ms_f:8.1f} ms  fwd+bwd {ms_fb:8.1f} ms | "
        f"all {grid.num_tets / 1e6:.1f}M tets fwd {ms_all:8.1f} ms"
    )


def bench_hashgrid(name: str, cfg: HashGridConfig, n: int, device: torch.device, repeats: int) -> None:
    enc = HashGridEncoding(cfg).to(device)
    x = torch.rand(n, 3, device=device)
    w = torch.randn(n, cfg.output_dim, device=device)

    def fwd() -> None:
        with torch.no_grad():
            enc(x)

    def fwd_bwd() -> None:
        enc.params.grad = None
        (enc(x) * w).sum().backward()

    ms_f = timed(fwd, repeats, device)
    ms_fb = timed(fwd_bwd, repeats, device)
    backend = enc.backend_for(device)
    print(
        f"hash grid {name:>7} ({cfg.levels} levels x {cfg.features_per_level}, "
        f"2^{cfg.log2_hashmap_size}, {backend}), "
        f"{n} pts: fwd {n / ms_f * 1e3:12,.0f} pts/s   fwd+bwd {n / ms_fb * 1e3:12,.0f} pts/s"
    )


def bench_mesh_sdf(device: torch.device) -> None:
    from headgen.config import build
    from headgen.geometry.sdf import MeshSDF
    from representations.dmtet import DMTet

    head = build("head", {"type": "builtin"}).load()
    t = time.perf_counter()
    sdf = MeshSDF(head.v_template, head.faces)
    t_build = time.perf_counter() - t
    grid = tet_grid(64)
    pts = grid.vertices.double() * 0.75 + torch.tensor([0.0, -0.2, 0.03], dtype=torch.float64)
    cell = 1.5 / 64
    sdf(pts[:4096], band=2.5 * cell)  # warm-up
    t = time.perf_counter()
    sdf(pts, band=2.5 * cell)
    t_sdf = time.perf_counter() - t
    print(
        f"mesh sdf  built-in head ({len(head.faces)} faces): build {t_build * 1e3:.0f} ms, "
        f"64^3 grid {t_sdf:.2f} s ({len(pts) / t_sdf:,.0f} pts/s, exact within 2.5 cells)"
    )
    small = HashGridConfig(levels=8, log2_hashmap_size=14, max_resolution=256)  # colour: not timed
    dm = DMTet(DMTet.Config(resolution=64, init="head", color_encoding=small), SimpleNamespace(head=head))
    t = time.perf_counter()
    dm.ensure_initialized()
    print(f"dmtet init head, grid 64, direct: {time.perf_counter() - t:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="skip the mesh SDF / DMTet init part")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for res in (64, 128):
        bench_marching(res, device, args.repeats)
    n = 1 << 18 if device.type == "cuda" else 1 << 16
    bench_hashgrid("default", HashGridConfig(backend="auto"), n, device, args.repeats)
    bench_hashgrid(
        "small",
        HashGridConfig(levels=8, log2_hashmap_size=16, max_resolution=256, backend="auto"),
        n,
        device,
        args.repeats,
    )
    if not args.quick:
        bench_mesh_sdf(device)


if __name__ == "__main__":
    main()
