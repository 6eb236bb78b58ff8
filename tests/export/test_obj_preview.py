"""OBJ/MTL/PNG export and previews on a small textured mesh."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from headgen.export.obj import ObjExporter
from headgen.export.preview import PreviewExporter
from headgen.geometry.laplacian import uniform_laplacian
from headgen.geometry.mesh import Mesh, SurfaceGeometry


class _Sphere:
    registered_name = "test-sphere"

    def __init__(self):
        s = trimesh.creation.uv_sphere(radius=0.5, count=[16, 16])
        v = torch.tensor(s.vertices, dtype=torch.float32)
        uv = torch.stack([0.5 + torch.atan2(v[:, 0], v[:, 2]) / (2 * torch.pi), 0.5 + v[:, 1]], -1)
        self.mesh = Mesh(v, torch.tensor(s.faces), uv.clamp(0, 1), None)
        tex = torch.zeros(32, 32, 3)
        tex[..., 0] = torch.linspace(0, 1, 32)[None, :]
        tex[..., 2] = 0.5
        self.tex = tex

    def export_surface(self):
        return SurfaceGeometry(self.mesh, albedo_map=self.tex, normal_map=torch.tensor([0.5, 0.5, 1.0]).repeat(8, 8, 1))


def test_obj_round_trips_through_trimesh(tmp_path):
    rep = _Sphere()
    written = ObjExporter(ObjExporter.Config()).export(rep, SimpleNamespace(device=torch.device("cpu")), tmp_path)
    assert set(written) == {"obj", "mtl", "diffuse_map", "normal_map"}
    mtl = (tmp_path / "head.mtl").read_text()
    assert "map_Kd diffuse.png" in mtl and "norm normal.png" in mtl
    loaded = trimesh.load(tmp_path / "head.obj", process=False)
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)
    assert loaded.visual.uv is not None and len(loaded.faces) == rep.mesh.num_faces
    # trimesh splits vertices at UV seams but the positions are the same set
    src = rep.mesh.v_pos.numpy()
    d = np.abs(loaded.vertices[:, None, :] - src[None]).sum(-1).min(1)
    assert d.max() < 1e-5
    img = np.asarray(loaded.visual.material.image)
    assert img.shape[:2] == (32, 32)


def test_obj_filename_must_end_with_obj():
    from headgen.errors import HeadgenError

    with pytest.raises(HeadgenError, match="must end with .obj"):
        ObjExporter(ObjExporter.Config(filename="head.ply"))


def test_preview_grid_and_turntable(tmp_path):
    import imageio.v3 as iio

    cfg = PreviewExporter.Config(resolution=64, turntable_frames=6, turntable_resolution=48, distance=2.5)
    written = PreviewExporter(cfg).export(_Sphere(), SimpleNamespace(device=torch.device("cpu")), tmp_path)
    grid = iio.imread(written["preview"])
    assert grid.shape == (2 * 64, 3 * 64, 3)  # shaded + textured rows, three views
    centre = grid[32, 32].astype(int)
    assert (centre < 250).any(), "the sphere is not visible in the front view"
    assert grid[0, 0].tolist() == [255, 255, 255]  # white background
    frames = iio.imread(written["turntable"])
    assert frames.shape[0] == 6 and frames.shape[1:3] == (48, 48)


def test_uniform_laplacian_of_flat_grid_interior_is_zero():
    g = trimesh.creation.box()
    lap = uniform_laplacian(len(g.vertices), torch.tensor(g.faces))
    v = torch.tensor(g.vertices, dtype=torch.float32)
    assert torch.allclose(torch.sparse.mm(lap, torch.ones(len(v), 1)), torch.zeros(len(v), 1), atol=1e-6)
    # a vertex minus its neighbour mean points outward on a convex box
    out = torch.sparse.mm(lap, v)
    assert ((out * v).sum(-1) > 0).all()
