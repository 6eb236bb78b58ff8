"""The pure-PyTorch rasterizer against brute force, closed forms and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from headgen.errors import HeadgenError
from headgen.render.raster import get_backend
from headgen.render.raster.select import _nvdiffrast_importable
from headgen.render.raster.torch_backend import TorchRasterBackend, edge_neighbors

BE = TorchRasterBackend()


def reference_raster(pos: np.ndarray, tri: np.ndarray, height: int, width: int):
    """Brute force: every pixel against every triangle (float64), nearest z/w wins.

    Returns triangle ids (-1 empty), perspective-correct (u, v), z/w and an 'ambiguous' mask for
    pixels within 1e-4 of a triangle edge (in barycentric units) or of a depth tie. A triangle with a
    corner behind the camera (w <= 0) is clipped to -w <= z <= w: the pixel's ray, solved for in
    homogeneous coordinates, must meet it in front of the camera (w > 0) with z/w in [-1, 1].
    """
    tid = -np.ones((height, width), dtype=np.int64)
    bary = np.zeros((height, width, 2))
    depth = np.zeros((height, width))
    ambiguous = np.zeros((height, width), dtype=bool)
    for r in range(height):
        for c in range(width):
            px, py = c + 0.5, r + 0.5
            hits = []
            for t, (i0, i1, i2) in enumerate(tri):
                p = pos[[i0, i1, i2]]
                if (p[:, 3] <= 0).any():
                    # b @ [hx, hy, w] = (px, py, 1): the ray's point (w = 1 / sum(b)) in the plane.
                    hom = np.stack([(p[:, 0] + p[:, 3]) * 0.5 * width, (p[:, 3] - p[:, 1]) * 0.5 * height, p[:, 3]], 1)
                    b = np.linalg.solve(hom.T, np.array([px, py, 1.0]))
                    if b.sum() <= 0:
                        continue  # the ray meets the triangle's plane behind the camera
                    persp = b / b.sum()
                    z = float(persp @ p[:, 2] / (persp @ p[:, 3]))
                    if abs(persp.min()) < 1e-4 or abs(abs(z) - 1) < 1e-4:
                        ambiguous[r, c] = True
                    if persp.min() >= 0 and -1 <= z <= 1:
                        hits.append((z, t, persp))
                    continue
                sx = (p[:, 0] / p[:, 3] + 1) * 0.5 * width
                sy = (1 - p[:, 1] / p[:, 3]) * 0.5 * height
                zn = p[:, 2] / p[:, 3]
                area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0])
                if area == 0:
                    continue
                lam = np.empty(3)
                for i in range(3):
                    j, k = (i + 1) % 3, (i + 2) % 3
                    lam[i] = ((sx[k] - sx[j]) * (py - sy[j]) - (sy[k] - sy[j]) * (px - sx[j])) / area
                z = float(lam @ zn)
                if abs(lam.min()) < 1e-4 or abs(abs(z) - 1) < 1e-4:
                    ambiguous[r, c] = True
                if lam.min() < 0 or z < -1 or z > 1:
                    continue
                persp = lam / p[:, 3]
                persp = persp / persp.sum()
                hits.append((z, t, persp))
            if hits:
                hits.sort(key=lambda h: (h[0], h[1]))
                if len(hits) > 1 and hits[1][0] - hits[0][0] < 1e-4:
                    ambiguous[r, c] = True
                z, t, persp = hits[0]
                tid[r, c], depth[r, c], bary[r, c] = t, z, persp[:2]
    return tid, bary, depth, ambiguous


def random_scene(seed: int, n_tri: int = 14):
    g = np.random.default_rng(seed)
    ndc = np.concatenate([g.uniform(-1.3, 1.3, (n_tri * 3, 2)), g.uniform(-1.1, 1.1, (n_tri * 3, 1))], 1)
    w = g.uniform(0.4, 2.5, (n_tri * 3, 1))
    w[g.integers(0, n_tri * 3, 2)] *= -1  # a few vertices behind the camera: their triangles are clipped
    pos = np.concatenate([ndc * np.abs(w), w], 1)
    tri = np.arange(n_tri * 3).reshape(n_tri, 3)
    # A few triangles share vertices with their neighbours (shared edges, like a real mesh).
    tri[1::4, 0] = tri[0::4, 1][: len(tri[1::4])]
    tri[1::4, 1] = tri[0::4, 2][: len(tri[1::4])]
    return pos, tri


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force_reference(seed: int) -> None:
    height, width = 24, 32
    pos, tri = random_scene(seed)
    ref_tid, ref_bary, ref_z, ambiguous = reference_raster(pos, tri, height, width)
    rast, db = BE.rasterize(torch.tensor(pos), torch.tensor(tri), (height, width))
    assert db is None and rast.shape == (1, height, width, 4) and rast.dtype == torch.float64
    got_tid = rast[0, ..., 3].long().numpy() - 1
    mismatch = got_tid != ref_tid
    assert not (mismatch & ~ambiguous).any(), f"visibility differs at {np.argwhere(mismatch & ~ambiguous)}"
    assert (ref_tid >= 0).sum() > 150  # the scene is not trivially empty
    assert ambiguous.mean() < 0.1
    same = ~mismatch & (ref_tid >= 0)
    np.testing.assert_allclose(rast[0, ..., :2].numpy()[same], ref_bary[same], atol=1e-9)
    np.testing.assert_allclose(rast[0, ..., 2].numpy()[same], ref_z[same], atol=1e-9)


def test_float32_agrees_with_float64() -> None:
    pos, tri = random_scene(7, n_tri=30)
    r64, _ = BE.rasterize(torch.tensor(pos), torch.tensor(tri), (48, 48))
    r32, _ = BE.rasterize(torch.tensor(pos, dtype=torch.float32), torch.tensor(tri), (48, 48))
    differ = (r64[..., 3] != r32[..., 3]).float().mean().item()
    assert differ < 0.01
    same = (r64[..., 3] == r32[..., 3]) & (r64[..., 3] > 0)
    assert torch.allclose(r32[same][:, :3].double(), r64[same][:, :3], atol=1e-4)


def square(x0: float, x1: float, y0: float, y1: float, w: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """Two counter-clockwise triangles covering an NDC rectangle at depth 0."""
    v = torch.tensor([[x0, y0, 0, 1], [x1, y0, 0, 1], [x1, y1, 0, 1], [x0, y1, 0, 1]], dtype=dtype)
    return v * w


QUAD = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_square_covers_expected_pixels_and_rows_start_at_top() -> None:
    height, width = 40, 50
    x0, x1, y0, y1 = -0.31, 0.47, 0.12, 0.83
    rast, _ = BE.rasterize(square(x0, x1, y0, y1, w=2.0), QUAD, (height, width))
    cover = rast[0, ..., 3] > 0
    cols = [c for c in range(width) if x0 < (c + 0.5) / width * 2 - 1 < x1]
    rows = [r for r in range(height) if y0 < 1 - (r + 0.5) / height * 2 < y1]
    assert int(cover.sum()) == len(cols) * len(rows)
    assert cover[rows[0], cols[0]] and cover[rows[-1], cols[-1]]
    # y > 0 is the upper half of the image: rows < H/2.
    assert max(rows) < height // 2 and cover[: height // 2].sum() == cover.sum()


def test_depth_test_clipping_and_culling() -> None:
    near = square(-0.5, 0.5, -0.5, 0.5) + torch.tensor([0, 0, -0.2, 0], dtype=torch.float64)
    far = square(-0.8, 0.8, -0.8, 0.8) + torch.tensor([0, 0, 0.3, 0], dtype=torch.float64)
    # Far first, so the id order does not decide.
    pos = torch.cat([far, near])
    tri = torch.cat([QUAD, QUAD + 4])
    rast, _ = BE.rasterize(pos, tri, (32, 32))
    ids = rast[0, ..., 3].long() - 1
    assert (ids[16, 16] >= 2) and (ids[5, 16] in (0, 1))
    assert torch.allclose(rast[0, 16, 16, 2], torch.tensor(-0.2, dtype=torch.float64))
    # Beyond the far plane (z/w > 1): nothing.
    beyond = square(-0.5, 0.5, -0.5, 0.5) + torch.tensor([0, 0, 1.5, 0], dtype=torch.float64)
    assert BE.rasterize(beyond, QUAD, (16, 16))[0][..., 3].sum() == 0
    # A vertex behind the camera (w < 0): the triangle is clipped, not culled. With z = 0 the near
    # plane z = -w is w = 0, so the part in front is unbounded: from the diagonal (0, 2), the
    # projections of the edges towards vertex 1 run down along x = -0.5 and right along y = 0.5.
    behind = square(-0.5, 0.5, -0.5, 0.5)
    behind[1, 3] = -1.0  # vertex 1 is used by the first triangle only
    ids = BE.rasterize(behind, QUAD, (16, 16))[0][0, ..., 3]
    centres = (torch.arange(16, dtype=torch.float64) + 0.5) / 8 - 1
    x, y = centres.expand(16, 16), -centres[:, None].expand(16, 16)  # NDC; row 0 at the top
    inside = (x > -0.5) & (y < 0.5)
    expected = torch.where(inside & (y < x), 1.0, torch.where(inside & (y > x), 2.0, 0.0)).to(ids.dtype)
    on_diagonal = x == y
    assert torch.equal(ids[~on_diagonal], expected[~on_diagonal]) and (expected == 1).sum() > 60
    assert set(ids[on_diagonal & inside].tolist()) <= {1.0, 2.0}
    # Every vertex behind the camera: nothing.
    all_behind = square(-0.5, 0.5, -0.5, 0.5) * torch.tensor([1, 1, 1, -1], dtype=torch.float64)
    assert BE.rasterize(all_behind, QUAD, (16, 16))[0][..., 3].sum() == 0


def test_batch_and_chunking_match_single_renders() -> None:
    pos_a, tri = random_scene(11, n_tri=20)
    pos_b, _ = random_scene(12, n_tri=20)
    big = square(-1.5, 1.4, -1.2, 1.3).numpy()  # larger than the small chunk budget below
    tri = np.concatenate([tri, np.array([[60, 61, 62], [60, 62, 63]])])
    pos_a, pos_b = np.concatenate([pos_a, big * 1.0]), np.concatenate([pos_b, big * 1.0 + [0, 0, 0.95, 0]])
    batch = torch.tensor(np.stack([pos_a, pos_b]))
    rb, _ = BE.rasterize(batch, torch.tensor(tri), (30, 40))
    small = TorchRasterBackend(max_candidates=97)
    rs, _ = small.rasterize(batch, torch.tensor(tri), (30, 40))
    assert torch.equal(rb, rs)
    for i, p in enumerate((pos_a, pos_b)):
        r1, _ = BE.rasterize(torch.tensor(p), torch.tensor(tri), (30, 40))
        assert torch.equal(rb[i : i + 1], r1)


def test_interpolation_is_perspective_correct_and_differentiable() -> None:
    pos, tri = random_scene(5, n_tri=10)
    pos_t = torch.tensor(pos)
    rast, _ = BE.rasterize(pos_t, torch.tensor(tri), (20, 24))
    xyw = BE.interpolate(pos_t[:, [0, 1, 3]], rast, torch.tensor(tri))[0]
    cover = rast[0, ..., 3] > 0
    cols = (torch.arange(24, dtype=torch.float64) + 0.5) / 24 * 2 - 1
    rows = 1 - (torch.arange(20, dtype=torch.float64) + 0.5) / 20 * 2
    assert torch.allclose((xyw[..., 0] / xyw[..., 2])[cover], cols.expand(20, 24)[cover], atol=1e-9)
    assert torch.allclose((xyw[..., 1] / xyw[..., 2])[cover], rows[:, None].expand(20, 24)[cover], atol=1e-9)
    assert (xyw[~cover] == 0).all()

    # Gradients w.r.t. positions through u, v, z/w and w.r.t. attributes (visibility fixed).
    attr = torch.randn(pos.shape[0], 2, dtype=torch.float64)
    tri_t = torch.tensor(tri)

    def f(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        r, _ = BE.rasterize(p, tri_t, (12, 12))
        return torch.cat([BE.interpolate(a, r, tri_t), r[..., 2:3]], -1)

    assert torch.autograd.gradcheck(f, (pos_t.clone().requires_grad_(), attr.requires_grad_()), atol=1e-6)


def test_texture_bilinear_matches_grid_sample_and_wraps() -> None:
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 7, 9, 3, generator=g, dtype=torch.float64)
    uv = torch.rand(2, 5, 6, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    ours = BE.texture(tex, uv, boundary_mode="clamp")
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1)  # row 0 of the image is v = 1
    ref = F.grid_sample(tex.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(ours, ref.permute(0, 2, 3, 1), atol=1e-12)
    # Texel (row 0, col 0) is the top-left: uv = (0.5/w, 1 - 0.5/h).
    corner = torch.tensor([[[[0.5 / 9, 1 - 0.5 / 7]]]], dtype=torch.float64)
    assert torch.allclose(BE.texture(tex[:1], corner)[0, 0, 0], tex[0, 0, 0])
    # Wrap: u and u + 1 agree; u = 0 is halfway between the last and first columns.
    assert torch.allclose(BE.texture(tex, uv, boundary_mode="wrap"), BE.texture(tex, uv + 1.0, boundary_mode="wrap"))
    edge = torch.tensor([[[[0.0, 1 - 0.5 / 7]]]], dtype=torch.float64)
    assert torch.allclose(BE.texture(tex[:1], edge)[0, 0, 0], 0.5 * (tex[0, 0, 0] + tex[0, 0, -1]))
    nearest = BE.texture(tex[:1], corner + 0.01, filter_mode="nearest")
    assert torch.equal(nearest[0, 0, 0], tex[0, 0, 0])
    # Broadcast a single texture over the batch; gradients w.r.t. texture and uv.
    assert BE.texture(tex[0], uv).shape == (2, 5, 6, 3)
    uv_in = (torch.rand(1, 3, 4, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    tex_in = tex[:1].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t, u: BE.texture(t, u, boundary_mode="wrap"), (tex_in, uv_in))
    with pytest.raises(NotImplementedError, match="mipmap"):
        BE.texture(tex, uv, filter_mode="linear-mipmap-linear")


def aa_opacity_sum(scale: torch.Tensor, angle: float, res: int = 48) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=torch.float64) * 0.5
    rot = corners @ torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    xy = rot * scale + torch.tensor([0.03, -0.02], dtype=torch.float64)
    w = 1.5
    pos = torch.cat([xy * w, torch.zeros(4, 1, dtype=torch.float64), torch.full((4, 1), w, dtype=torch.float64)], 1)
    rast, _ = BE.rasterize(pos, QUAD, (res, res))
    mask = (rast[..., 3:4] > 0).to(torch.float64)
    return BE.antialias(mask, rast, pos, QUAD).sum()


@pytest.mark.parametrize("angle", [0.0, 0.35, 0.8])
def test_silhouette_gradient_matches_finite_differences(angle: float) -> None:
    scale = torch.tensor(1.013, dtype=torch.float64, requires_grad=True)
    total = aa_opacity_sum(scale, angle)
    (grad,) = torch.autograd.grad(total, scale)
    h = 0.01
    fd = (aa_opacity_sum(scale.detach() + h, angle) - aa_opacity_sum(scale.detach() - h, angle)) / (2 * h)
    assert grad.item() > 0
    assert abs(grad.item() - fd.item()) < 0.1 * abs(fd.item())
    # And the antialiased coverage tracks the true area: side = scale * 0.5 * res pixels.
    side = 1.013 * 0.5 * 48
    assert abs(total.item() - side**2) < 0.02 * side**2
    assert abs(grad.item() - 2 * side**2 / 1.013) < 0.1 * 2 * side**2 / 1.013


def test_antialias_leaves_interior_edges_alone() -> None:
    # Two triangles of one flat quad: the shared diagonal is not a silhouette.
    pos = square(-0.5, 0.5, -0.5, 0.5)
    rast, _ = BE.rasterize(pos, QUAD, (16, 16))
    color = (rast[..., 3:4] == 1).to(torch.float64)  # a colour jump along the diagonal only
    out = BE.antialias(color, rast, pos, QUAD)
    inside = rast[..., 3] > 0
    assert torch.equal(out[inside], color[inside])


def test_edge_neighbors() -> None:
    tet = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    nbr = edge_neighbors(tet)
    assert (nbr >= 0).all()
    for f in range(4):
        for i in range(3):
            a, b = tet[f, (i + 1) % 3].item(), tet[f, (i + 2) % 3].item()
            assert {a, b} <= set(tet[nbr[f, i]].tolist()) and nbr[f, i] != f
    assert edge_neighbors(QUAD).tolist() == [[-1, 1, -1], [-1, -1, 0]]  # diagonal (0, 2)


def test_get_backend_choices() -> None:
    assert isinstance(get_backend("auto", "cpu"), TorchRasterBackend)
    assert isinstance(get_backend("torch"), TorchRasterBackend)
    with pytest.raises(HeadgenError, match="did you mean 'torch'"):
        get_backend("torhc")
    if _nvdiffrast_importable():
        pytest.skip("nvdiffrast is installed here; the not-installed message cannot be checked")
    with pytest.raises(HeadgenError) as err:
        get_backend("nvdiffrast", "cpu")
    msg = str(err.value)
    assert "not installed" in msg and "pip install git+https://github.com/NVlabs/nvdiffrast" in msg
    assert "backend: torch" in msg


# ---------------------------------------------------------------- triangles through the camera plane
def look_at_mvp(eye: np.ndarray, forward: np.ndarray, fovy_deg: float, aspect: float, near: float, far: float):
    """OpenGL-style projection @ view (camera looks down -z, y up), float64."""
    f = forward / np.linalg.norm(forward)
    r = np.cross(f, [0.0, 1.0, 0.0])
    r /= np.linalg.norm(r)
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = r, np.cross(r, f), -f
    view[:3, 3] = -view[:3, :3] @ eye
    t = math.tan(math.radians(fovy_deg) / 2)
    proj = np.zeros((4, 4))
    proj[0, 0], proj[1, 1] = 1 / (t * aspect), 1 / t
    proj[2, 2], proj[2, 3], proj[3, 2] = -(far + near) / (far - near), -2 * far * near / (far - near), -1.0
    return proj @ view


def floor_scene(height: int = 48, width: int = 64):
    """A floor of 8 x 8 quads (128 triangles, 1 wide and 4 long) passing under and behind a camera
    0.4 above it that looks 50 degrees down: two rows of quads reach behind the camera plane."""
    g = np.linspace(-0.5, 0.5, 9)
    xx, zz = np.meshgrid(g, g * 4)
    verts = np.stack([xx.ravel(), np.zeros(xx.size), zz.ravel()], 1)
    i = (np.arange(8)[:, None] * 9 + np.arange(8)[None]).ravel()
    tri = np.concatenate([np.stack([i, i + 1, i + 10], 1), np.stack([i, i + 10, i + 9], 1)])
    pitch = math.radians(50)
    eye = np.array([0.02, 0.4, 1.0])
    mvp = look_at_mvp(eye, np.array([0.0, -math.sin(pitch), -math.cos(pitch)]), 110, width / height, 0.05, 50)
    return verts, tri, mvp


def ray_reference(verts: np.ndarray, tri: np.ndarray, mvp: np.ndarray, height: int, width: int):
    """Per pixel centre, the ray from the near plane to the far plane intersected with every triangle
    in world space (Moller-Trumbore, float64). Returns the hit triangle (-1 none), its barycentrics,
    the world hit point, z/w and a mask of pixels within 1e-9 of an edge or of the near/far plane.
    Only meaningful for a scene where no two triangles overlap on screen (a floor)."""
    inv = np.linalg.inv(mvp)
    xs = (np.arange(width) + 0.5) / width * 2 - 1
    ys = 1 - (np.arange(height) + 0.5) / height * 2
    x, y = np.meshgrid(xs, ys)
    ends = [np.stack([x, y, np.full_like(x, z), np.ones_like(x)], -1) @ inv.T for z in (-1.0, 1.0)]
    o, e = (p[..., :3] / p[..., 3:] for p in ends)
    d = (e - o).reshape(-1, 1, 3)
    o = o.reshape(-1, 1, 3)
    p0, p1, p2 = (verts[tri[:, k]] for k in range(3))
    e1, e2 = p1 - p0, p2 - p0
    pv = np.cross(d, e2)
    det = (e1 * pv).sum(-1)
    tv = o - p0
    b1 = (tv * pv).sum(-1) / det
    qv = np.cross(tv, e1)
    b2 = (d * qv).sum(-1) / det
    t = (e2 * qv).sum(-1) / det
    bary = np.stack([1 - b1 - b2, b1, b2], -1)
    lo = np.minimum(bary.min(-1), np.minimum(t, 1 - t))  # t in [0, 1]: between the near and far planes
    ambiguous = (np.abs(lo) < 1e-9).any(1).reshape(height, width)
    hit = lo >= 0
    tid = np.where(hit.any(1), hit.argmax(1), -1)
    rows = np.arange(tid.size)
    point = (o[:, 0] + t[rows, tid, None] * d[:, 0]).reshape(height, width, 3)
    clip = np.concatenate([point, np.ones((height, width, 1))], -1) @ mvp.T
    return (tid.reshape(height, width), bary[rows, tid].reshape(height, width, 3), point,
            clip[..., 2] / clip[..., 3], ambiguous)


def test_floor_through_camera_plane_is_clipped_like_nvdiffrast() -> None:
    height, width = 48, 64
    verts, tri, mvp = floor_scene(height, width)
    pos = np.concatenate([verts, np.ones((len(verts), 1))], 1) @ mvp.T
    behind = pos[tri][..., 3] <= 0
    assert behind.any(-1).sum() == 32 and behind.all(-1).sum() == 16  # 16 partly, 16 wholly behind
    ref_tid, ref_bary, ref_point, ref_z, ambiguous = ray_reference(verts, tri, mvp, height, width)
    rast, _ = BE.rasterize(torch.tensor(pos), torch.tensor(tri), (height, width))
    got = rast[0, ..., 3].long().numpy() - 1
    # Every triangle with a part in front of the near plane and inside the view is drawn: 92 here,
    # the 16 partly behind the camera included (the culling rasterizer drew 76).
    drawn, expected = set(np.unique(got[got >= 0]).tolist()), set(np.unique(ref_tid[ref_tid >= 0]).tolist())
    assert drawn == expected and len(drawn) == 92
    assert set(np.nonzero(behind.any(-1) & ~behind.all(-1))[0].tolist()) <= drawn
    assert not ((got != ref_tid) & ~ambiguous).any() and ambiguous.mean() < 0.05

    # Pixels of clipped triangles: (u, v), z/w and interpolated attributes of the original triangle.
    clipped = np.isin(got, np.nonzero(behind.any(-1))[0]) & (got == ref_tid)
    assert clipped.sum() > 300
    np.testing.assert_allclose(rast[0, ..., :2].numpy()[clipped], ref_bary[..., :2][clipped], atol=1e-9)
    np.testing.assert_allclose(rast[0, ..., 2].numpy()[clipped], ref_z[clipped], atol=1e-9)
    world = BE.interpolate(torch.tensor(verts), rast, torch.tensor(tri))[0].numpy()
    np.testing.assert_allclose(world[clipped], ref_point[clipped], atol=1e-9)
    # float32 agrees (pixels on the same triangle).
    r32, _ = BE.rasterize(torch.tensor(pos, dtype=torch.float32), torch.tensor(tri), (height, width))
    same = clipped & (r32[0, ..., 3].long().numpy() - 1 == got)
    assert same.sum() > 0.99 * clipped.sum()
    np.testing.assert_allclose(r32[0, ..., :3].double().numpy()[same], rast[0, ..., :3].numpy()[same], atol=1e-4)


def test_clipped_triangles_have_finite_gradients_and_antialias() -> None:
    height, width = 48, 64
    verts, tri, mvp = floor_scene(height, width)
    tri_t = torch.tensor(tri)
    world = torch.tensor(verts, requires_grad=True)
    colour = torch.rand(len(verts), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    pos = torch.cat([world, torch.ones(len(verts), 1, dtype=torch.float64)], 1) @ torch.tensor(mvp).T
    rast, _ = BE.rasterize(pos, tri_t, (height, width))
    img = BE.interpolate(colour, rast, tri_t)
    out = BE.antialias(img, rast, pos, tri_t)
    assert torch.isfinite(out).all() and ((out - img).abs().amax() <= 1.0)
    # Where nothing but clipped triangles meet, antialias leaves the image alone.
    clipped_tri = (pos.detach()[tri_t][..., 3] <= 0).any(-1)
    ids = rast[0, ..., 3].long() - 1
    on_clipped = (ids >= 0) & clipped_tri[ids.clamp(min=0)]
    pad = F.pad(on_clipped[None, None].float(), (1, 1, 1, 1))
    interior = F.max_pool2d(1 - pad, 3, stride=1)[0, 0] == 0
    assert interior.sum() > 100 and torch.equal(out[0][interior], img[0][interior])
    (out.square().sum() + rast[..., 2].sum()).backward()
    assert torch.isfinite(world.grad).all()
    drawn_clipped = torch.zeros(len(tri), dtype=torch.bool)
    drawn_clipped[ids[on_clipped].unique()] = True
    assert world.grad[tri_t[drawn_clipped].unique()].abs().sum() > 0

    # Gradients of clipped triangles' (u, v, z/w) match finite differences.
    used, tri_c = torch.unique(tri_t[clipped_tri & drawn_clipped], return_inverse=True)
    pos_c, colour_c = pos.detach()[used], colour[used]

    def f(p: torch.Tensor) -> torch.Tensor:
        r, _ = BE.rasterize(p, tri_c, (12, 16))
        return torch.cat([BE.interpolate(colour_c, r, tri_c), r[..., 2:3]], -1)

    assert (BE.rasterize(pos_c, tri_c, (12, 16))[0][..., 3] > 0).sum() > 30
    assert torch.autograd.gradcheck(f, (pos_c.clone().requires_grad_(),), atol=1e-6)
