"""Rasterizer speed: torch backend (and nvdiffrast when importable on CUDA) on a head-sized mesh.

Builds a closed, head-like mesh of ~28k triangles (a deformed latitude-longitude sphere with a
nose, since the real head model is not needed to measure the rasterizer), renders it at 512x512
from the front, and prints forward and forward+backward milliseconds for

* ``raster``: rasterize + interpolate(normals) + antialias, loss on the image, grad to positions;
* ``render``: ``MeshRenderer.render(modes=('rgb', 'opacity'))`` with a 512x512 albedo map,
  grads to positions and the albedo map.

Usage: ``python benchmarks/bench_raster.py [--device cpu|cuda] [--threads N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

# Runnable as a plain script from a checkout that is not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headgen.cameras import Cameras  # noqa: E402
from headgen.geometry import Mesh, SurfaceGeometry  # noqa: E402
from headgen.render.mesh_renderer import MeshRenderer  # noqa: E402
from headgen.render.raster import RasterBackend, get_backend  # noqa: E402


def head_like_mesh(rows: int = 98, cols: int = 144, device: str = "cpu") -> Mesh:
    """A closed lat-long sphere ((rows - 2) * cols * 2 + 2 * cols triangles), squashed into a head."""
    theta = torch.linspace(0, math.pi, rows + 1)[1:-1]  # interior latitudes
    phi = torch.arange(cols) * (2 * math.pi / cols)
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    x = torch.sin(th) * torch.sin(ph)
    y = torch.cos(th)
    z = torch.sin(th) * torch.cos(ph)
    # Head proportions plus a nose bump toward +z and a chin.
    nose = 0.25 * torch.exp(-((x / 0.18) ** 2 + ((y + 0.05) / 0.25) ** 2)) * (z > 0)
    pos = torch.stack([0.78 * x, 1.0 * y, 0.9 * z + nose], dim=-1).reshape(-1, 3)
    pos = torch.cat([pos, torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])])
    n_ring = rows - 1
    top, bottom = n_ring * cols, n_ring * cols + 1
    faces = []
    idx = torch.arange(n_ring * cols).view(n_ring, cols)
    nxt = torch.roll(idx, -1, dims=1)
    a, b, c, d = idx[:-1], nxt[:-1], idx[1:], nxt[1:]
    faces.append(torch.stack([a, c, d], -1).reshape(-1, 3))
    faces.append(torch.stack([a, d, b], -1).reshape(-1, 3))
    faces.append(torch.stack([torch.full((cols,), top), idx[0], nxt[0]], -1))
    faces.append(torch.stack([torch.full((cols,), bottom), nxt[-1], idx[-1]], -1))
    tri = torch.cat(faces)
    uv = torch.stack([torch.atan2(pos[:, 0], pos[:, 2]) / (2 * math.pi) + 0.5, 0.5 + 0.5 * pos[:, 1]], -1)
    mesh = Mesh(pos, tri, uv.clamp(0, 1))
    # Make sure the winding is outward (CCW seen from outside).
    if (mesh.face_normals() * mesh.v_pos[tri].mean(1)).sum() < 0:
        mesh = Mesh(pos, tri[:, [0, 2, 1]], uv.clamp(0, 1))
    return mesh.to(device)


def raster_step(
    be: RasterBackend, v: Tensor, tri: Tensor, mvp: Tensor, weights: Tensor, res: int
) -> Callable[[bool], None]:
    """rasterize + interpolate(normals) + antialias, and optionally backward to positions."""

    def step(backward: bool) -> None:
        pos = torch.einsum("vi,bji->bvj", torch.nn.functional.pad(v, (0, 1), value=1.0), mvp)
        rast, _ = be.rasterize(pos, tri, (res, res))
        n = be.interpolate(Mesh(v, tri).vertex_normals(), rast, tri)
        img = be.antialias(n * 0.5 + 0.5, rast, pos, tri)
        if backward:
            (img * weights).sum().backward()

    return step


def render_step(
    backend: str, mesh: Mesh, v: Tensor, cams: Cameras, weights: Tensor, res: int
) -> Callable[[bool], None]:
    """MeshRenderer rgb + opacity with a 512x512 albedo map, optionally backward."""
    renderer = MeshRenderer(MeshRenderer.Config(resolution=res, backend=backend))
    albedo = torch.rand(512, 512, 3, device=v.device, requires_grad=True)

    def step(backward: bool) -> None:
        geo = SurfaceGeometry(mesh.with_positions(v), albedo_map=albedo)
        out = renderer.render(geo, cams, modes=("rgb", "opacity"))
        if backward:
            ((out["rgb"] * weights).sum() + out["opacity"].sum()).backward()

    return step


def timeit(fn: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=512)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    mesh = head_like_mesh(device=args.device)
    res = args.resolution
    print(
        f"mesh: {mesh.num_vertices} vertices, {mesh.num_faces} triangles; {res}x{res}; device {dev}; "
        f"torch threads {torch.get_num_threads()}"
    )
    backends = ["torch"]
    if dev.type == "cuda":
        try:
            get_backend("nvdiffrast", dev)
            backends.append("nvdiffrast")
        except Exception as exc:  # report and keep measuring the torch backend
            print(f"nvdiffrast unavailable: {exc}")

    results: dict[tuple[str, str, int], tuple[float, float]] = {}
    for name in backends:
        be = get_backend(name, dev)
        for bsz in (1, 4):
            az = torch.linspace(-40, 40, bsz)
            cams = Cameras.from_spherical(
                torch.zeros(bsz), az, torch.full((bsz,), 2.7), torch.full((bsz,), 45.0), res
            ).to(dev)
            v = mesh.v_pos.clone().requires_grad_(True)
            weights = torch.rand(bsz, res, res, 3, device=dev)
            raster = raster_step(be, v, mesh.t_pos_idx, cams.mvp(), weights, res)
            render = render_step(name, mesh, v, cams, weights, res)
            for label, fn in (("raster", raster), ("render", render)):
                fwd = timeit(lambda fn=fn: fn(False), args.repeats, sync)
                both = timeit(lambda fn=fn: fn(True), args.repeats, sync)
                results[(name, label, bsz)] = (fwd, both)
                print(f"{name:10s} {label:6s} B={bsz}: forward {fwd:8.1f} ms   forward+backward {both:8.1f} ms")
    if ("nvdiffrast", "raster", 1) in results:
        for label in ("raster", "render"):
            for bsz in (1, 4):
                t, n = results[("torch", label, bsz)][1], results[("nvdiffrast", label, bsz)][1]
                print(f"ratio torch/nvdiffrast {label} B={bsz} (fwd+bwd): {t / n:.1f}x")


if __name__ == "__main__":
    main()
