import math

import pytest
import torch

from headgen.errors import HeadgenError
from headgen.geometry.marching_tets import TRI_COUNT, is_watertight, marching_tets, mesh_edges
from headgen.geometry.mesh import Mesh
from headgen.geometry.tets import TetGrid, tet_grid


def signed_volumes(pos: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    p = pos[tets].double()
    return torch.linalg.det(p[:, 1:] - p[:, :1]) / 6.0


def test_tet_grid_is_positive_conforming_and_fills_the_cube():
    r = 4
    grid = TetGrid(r)
    assert grid.vertices.shape == ((r + 1) ** 3, 3)
    assert grid.tets.shape == (6 * r**3, 4)
    vol = signed_volumes(grid.vertices, grid.tets)
    assert (vol > 0).all()
    # Equal volumes summing to the cube [-1, 1]^3: no overlap, no gap.
    torch.testing.assert_close(vol, torch.full_like(vol, (2.0 / r) ** 3 / 6))
    assert float(vol.sum()) == pytest.approx(8.0)
    # Conforming: every triangular face is shared by exactly two tetrahedra (with opposite
    # orientation), except the faces on the cube, which belong to one; their number is 2 per
    # boundary square.
    corners = torch.tensor([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])
    faces = grid.tets[:, corners].reshape(-1, 3)
    key = faces.sort(dim=-1).values
    n = grid.num_vertices
    flat = (key[:, 0] * n + key[:, 1]) * n + key[:, 2]
    uniq, counts = torch.unique(flat, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert int((counts == 1).sum()) == 6 * r * r * 2
    boundary_keys = uniq[counts == 1]
    bk = torch.stack([boundary_keys // (n * n), (boundary_keys // n) % n, boundary_keys % n], dim=-1)
    on_face = grid.vertices[bk].abs() > 1 - 1e-6  # [B,3 corners,3 axes]
    assert on_face.all(dim=1).any(dim=-1).all()  # all three corners on one cube face
    # The outward-wound faces of two neighbours are opposite: their corner orders have
    # different permutation parity.
    parity = (
        (faces[:, 0] > faces[:, 1]).long()
        + (faces[:, 0] > faces[:, 2]).long()
        + (faces[:, 1] > faces[:, 2]).long()
    ) % 2
    _, inverse = torch.unique(flat, return_inverse=True)
    parity_sum = torch.zeros(uniq.shape[0], dtype=torch.long).index_add(0, inverse, parity)
    assert (parity_sum[counts == 2] == 1).all()


def test_tet_grid_cache_and_cube_tets():
    assert tet_grid(8) is tet_grid(8)
    assert tet_grid(8) is not tet_grid(9)
    g = tet_grid(5)
    cubes = torch.tensor([0, 7, 124])
    torch.testing.assert_close(g.cube_tets(cubes), g.tets.reshape(-1, 6, 4)[cubes].reshape(-1, 4))
    with pytest.raises(HeadgenError, match="positive integer"):
        tet_grid(0)


@pytest.fixture(scope="module")
def sphere64():
    grid = tet_grid(64)
    radius = 0.7137  # not aligned with the lattice
    sdf = grid.vertices.norm(dim=-1) - radius
    verts, faces = marching_tets(grid.vertices, sdf, grid.surface_tets(sdf < 0))
    return grid, sdf, radius, verts, faces


def test_sphere_watertight_outward_and_accurate(sphere64):
    grid, sdf, radius, verts, faces = sphere64
    assert faces.shape[0] > 10000
    assert is_watertight(faces)
    # A closed genus-0 surface: V - E + F = 2, and every vertex is used.
    edges, _ = mesh_edges(faces)
    assert verts.shape[0] - edges.shape[0] + faces.shape[0] == 2
    assert torch.unique(faces).numel() == verts.shape[0]
    # Outward: every face normal points away from the centre; enclosed volume is positive.
    mesh = Mesh(verts, faces)
    centroid = verts[faces].mean(1)
    assert ((mesh.face_normals() * centroid).sum(-1) > 0).all()
    tri = verts[faces].double()
    volume = float((tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum() / 6)
    assert volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.01)
    # Vertices on the sphere to within 1% of the radius (in fact ~0.1%).
    err = (verts.norm(dim=-1) - radius).abs().max() / radius
    assert err < 0.01
    assert err < 0.002


def test_surface_tets_give_the_same_mesh_as_all_tets(sphere64):
    grid, sdf, radius, verts, faces = sphere64
    small = tet_grid(16)
    s = small.vertices.norm(dim=-1) - radius
    v_all, f_all = marching_tets(small.vertices, s, small.tets)
    v_sub, f_sub = marching_tets(small.vertices, s, small.surface_tets(s < 0))
    assert f_all.shape == f_sub.shape
    a = v_all[f_all].sum(1)
    b = v_sub[f_sub].sum(1)
    torch.testing.assert_close(
        a[torch.argsort(a[:, 0] * 1e6 + a[:, 1] * 1e3 + a[:, 2])],
        b[torch.argsort(b[:, 0] * 1e6 + b[:, 1] * 1e3 + b[:, 2])],
    )


def test_every_case_is_oriented_toward_increasing_sdf():
    gen = torch.Generator().manual_seed(0)
    assert TRI_COUNT.tolist() == [0, 1, 1, 2, 1, 2, 2, 1, 1, 2, 2, 1, 2, 1, 1, 0]
    checked = 0
    for _ in range(200):
        pos = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        if torch.linalg.det(pos[1:] - pos[0]) < 0:
            pos = pos[[0, 2, 1, 3]]
        sdf = torch.randn(4, generator=gen, dtype=torch.float64)
        verts, faces = marching_tets(pos, sdf, torch.tensor([[0, 1, 2, 3]]))
        if faces.shape[0] == 0:
            continue
        # Gradient of the linear interpolant of sdf over the tetrahedron.
        grad = torch.linalg.solve(pos[1:] - pos[0], sdf[1:] - sdf[0])
        t = verts[faces]
        n = torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        assert ((n @ grad) > 0).all()
        # Planar piece: every vertex lies on the zero level of the interpolant.
        level = sdf[0] + (verts - pos[0]) @ grad
        torch.testing.assert_close(level, torch.zeros_like(level), atol=1e-9, rtol=0)
        checked += 1
    assert checked > 100


def test_gradients_wrt_sdf_and_positions():
    pos = torch.tensor(
        [[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64, requires_grad=True
    )
    sdf = torch.tensor([-0.3, 0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    tets = torch.tensor([[0, 1, 2, 3]])
    verts, faces = marching_tets(pos, sdf, tets)
    assert faces.shape == (1, 3)
    # The vertex on edge (0, 1) is at t = 0.3 / 0.5 along x: x = 0.6; dx/ds0 = -s1/(s1-s0)^2 ...
    on_x = verts[(verts[:, 1].abs() < 1e-12) & (verts[:, 2].abs() < 1e-12)][0]
    assert float(on_x[0].detach()) == pytest.approx(0.6)
    (g_s,) = torch.autograd.grad(on_x[0], sdf, retain_graph=True)
    s0, s1 = -0.3, 0.2
    assert float(g_s[0]) == pytest.approx(-s1 / (s1 - s0) ** 2 * 1.0)  # p1 - p0 = 1 along x
    assert float(g_s[1]) == pytest.approx(s0 / (s1 - s0) ** 2 * 1.0)
    # Full Jacobian check against finite differences (the topology is stable near this point).
    torch.autograd.gradcheck(lambda p, s: marching_tets(p, s, tets)[0], (pos, sdf))


def test_empty_and_bad_inputs():
    grid = tet_grid(4)
    v, f = marching_tets(grid.vertices, torch.ones(grid.num_vertices), grid.tets)
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(HeadgenError, match="sdf must be"):
        marching_tets(grid.vertices, torch.ones(3), grid.tets)


def test_is_watertight_detects_holes_and_flips(sphere64):
    _, _, _, _, faces = sphere64
    assert not is_watertight(faces[1:])
    flipped = faces.clone()
    flipped[0] = flipped[0, [0, 2, 1]]
    assert not is_watertight(flipped)
