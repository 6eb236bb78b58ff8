"""Pure-PyTorch differentiable rasterizer (runs on CPU and GPU).

How it works
------------
* **Visibility, without autograd.** Each triangle's pixel bounding box is expanded into a flat
  list of candidate pixels (``repeat_interleave``, no Python loop over triangles), in chunks of
  about ``max_candidates`` so memory stays bounded (a huge triangle is split into row bands).
  Edge functions at the pixel centres decide coverage; the depth ``z/w`` is affine in screen space.
  A z-buffer is one ``scatter_reduce(amin)`` on an int64 key per pixel: quantised depth in the high
  bits, triangle id in the low bits, so the nearest triangle wins and exact ties go to the lower
  triangle id, deterministically on every device.
* **Barycentrics, with autograd.** For the visible pixels only, the perspective-correct
  barycentrics and ``z/w`` are recomputed from ``pos_clip``, so gradients reach vertex positions
  through ``u``, ``v`` and ``z/w``.
* **Triangles through the camera plane** (a corner at ``w <= 1e-8``) are clipped to the near and
  far planes (``-w <= z <= w``), as nvdiffrast clips them, without building sub-triangles: a pixel
  is covered where its ray meets the triangle in front of the camera with ``z/w`` in ``[-1, 1]``,
  decided by 2D homogeneous edge functions (Olano & Greer 1997), which need no division by ``w``.
  Candidate pixels come from the screen box of the clipped polygon. ``(u, v)`` and ``z/w`` are
  those of the original triangle at the ray's hit point (what nvdiffrast reports for a clipped
  triangle), recomputed differentiably from ``pos_clip`` in the same way. Triangles entirely in
  front of the camera plane take the screen-space path above, unchanged.
* **Antialiasing** follows nvdiffrast's analytic method: for each pair of horizontally or
  vertically adjacent pixels that show different triangles (or a triangle and the background),
  the segment between the two pixel centres is followed from the nearer pixel's triangle across
  the mesh (through shared, non-silhouette edges, up to ``aa_walk_steps`` triangles) until it
  crosses a silhouette edge: a mesh boundary, or an edge whose two faces face opposite ways in
  screen space. (Walking matters: near a silhouette the triangles are thin slivers, and the one
  covering the pixel centre rarely owns the silhouette edge.) If that edge is oriented across the
  pair (mostly vertical for a horizontal pair, mostly horizontal for a vertical pair), the two
  colours are blended by where the edge crosses the segment. The crossing is a differentiable
  function of the edge's two clip-space vertices, which is what gives silhouettes gradients; the
  summed coverage then moves with the true swept area.

Limitations (documented, not hidden): clipping is against the near and far planes only (nvdiffrast
also clips x and y against its guard band, which changes no pixel); pixels whose ``z/w`` falls
outside ``[-1, 1]`` are discarded, which is exact near/far clipping for every triangle. A polygon
of a clipped triangle that reaches ``w = 0`` (only with a degenerate projection whose near plane is
``w = 0``) is unbounded on screen; its candidate box is then the whole image. ``antialias`` does
not follow edges of triangles with a corner at ``w <= 1e-8``: a pixel pair whose nearer triangle is
such a triangle, or whose walk reaches one through a non-silhouette edge, is not blended (those
triangles still count as surface, with their facing, when deciding whether a neighbour's edge is a
silhouette). nvdiffrast's antialias projects every corner by ``1/w`` and so is only meaningful for
edges in front of the camera too. ``rast_db`` is not computed (returned as None), and textures are
sampled without mipmaps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.gather import stack_last, take
from headgen.render.raster.base import RasterBackend, batch_positions, check_tri

_W_EPS = 1e-8
_EMPTY = torch.iinfo(torch.int64).max


def screen_triangles(pos: Tensor, tri: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Per-corner screen data [B,F,3,4] = (x_px, y_px, 1/w, z/w) and a [B,F] validity mask.

    ``x_px`` grows to the right and ``y_px`` downwards (row 0 at the top), in pixel units.
    """
    # Projected per vertex, then gathered per corner: the same arithmetic on each corner's values
    # as projecting corners, on V rather than 3F points (a closed mesh has F ~ 2V): 6x less work.
    w = pos[..., 3]
    w_ok = w > _W_EPS
    inv_w = 1.0 / torch.where(w_ok, w, torch.ones_like(w))
    sx = (pos[..., 0] * inv_w + 1.0) * (0.5 * width)
    sy = (1.0 - pos[..., 1] * inv_w) * (0.5 * height)
    zn = pos[..., 2] * inv_w
    ok = take(w_ok, tri, 1)
    return take(stack_last([sx, sy, inv_w, zn]), tri, 1), ok[..., 0] & ok[..., 1] & ok[..., 2]


def _edge_functions(x: Tensor, y: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Edge functions e_i at points (px, py); e_i vanishes on the edge opposite corner i.

    Written relative to a vertex of each edge (not as a*x + b*y + c) to avoid cancellation far
    from the origin; ``e0 + e1 + e2`` equals the doubled signed area.
    """
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    return e0, e1, e2


def _min3(t: Tensor) -> Tensor:
    return torch.minimum(torch.minimum(t[..., 0], t[..., 1]), t[..., 2])


def _max3(t: Tensor) -> Tensor:
    return torch.maximum(torch.maximum(t[..., 0], t[..., 1]), t[..., 2])


def _area2(x: Tensor, y: Tensor) -> Tensor:
    return (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (y[..., 1] - y[..., 0])


def homogeneous_corners(corners: Tensor, height: int, width: int) -> Tensor:
    """Clip-space corners [...,4] as pixel-scaled homogeneous coordinates (hx, hy, z, w).

    ``hx / w`` and ``hy / w`` are the pixel coordinates of :func:`screen_triangles`, but no division
    by ``w`` takes place, so corners at or behind the camera plane stay finite.
    """
    cx, cy, cz, cw = corners.unbind(-1)
    return stack_last([(cx + cw) * (0.5 * width), (cw - cy) * (0.5 * height), cz, cw])


def _homogeneous_edge_functions(h: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """2D homogeneous edge functions (Olano & Greer) of triangles ``h`` [N,3,4] at pixels (px, py).

    ``E_i = det[p; V_j; V_k]`` with ``p = (px, py, 1)`` and ``V = (hx, hy, w)``, evaluated relative to
    the pixel (``V - w p`` has a zero third component) to avoid cancellation. Where every corner has
    ``w > 0``, ``E_i = w_j w_k e_i`` with ``e_i`` from :func:`_edge_functions`. The perspective-correct
    barycentrics of the pixel's ray are ``E / sum(E)``; the ray meets the triangle in front of the
    camera iff every ``E_i`` has the sign of ``sum_i E_i w_i`` (the determinant of the corners).
    """
    hx, hy, w = h[..., 0], h[..., 1], h[..., 3]
    ax = hx - w * px.unsqueeze(-1)
    ay = hy - w * py.unsqueeze(-1)
    ax0, ax1, ax2 = ax.unbind(-1)
    ay0, ay1, ay2 = ay.unbind(-1)
    return ax1 * ay2 - ay1 * ax2, ax2 * ay0 - ay2 * ax0, ax0 * ay1 - ay0 * ax1


def _homogeneous_det(h: Tensor) -> Tensor:
    """det of the rows (hx, hy, w) of each triangle: ``w0 w1 w2`` times the doubled screen area."""
    zero = h.new_zeros(h.shape[:-2])
    e0, e1, e2 = _homogeneous_edge_functions(h, zero, zero)
    return e0 * h[..., 0, 3] + e1 * h[..., 1, 3] + e2 * h[..., 2, 3]


def _clipped_extent(h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Screen extent of the part of triangles ``h`` [N,3,4] inside ``-w <= z <= w``.

    Returns ``(xmin, xmax, ymin, ymax, any_part, unbounded)``. The vertices of the clipped polygon
    are the corners inside both planes, the crossings of the edges with either plane that lie inside
    the other, and the point ``z = w = 0`` of the triangle's plane if it lies in the triangle. A
    polygon vertex at ``w <= 1e-8`` projects to infinity (degenerate projections whose near plane is
    ``w = 0``): ``unbounded`` then asks for the whole image as the bounding box.
    """
    z, w = h[..., 2], h[..., 3]
    dn, df = z + w, w - z  # distances to the near (z >= -w) and far (z <= w) planes
    nxt = [1, 2, 0]
    pts = [h]
    oks = [(dn >= 0) & (df >= 0)]
    for d, sign in ((dn, 1.0), (df, -1.0)):
        dj = d[:, nxt]
        cross = ((d > 0) & (dj < 0)) | ((d < 0) & (dj > 0))
        t = d / torch.where(cross, d - dj, torch.ones_like(d))
        p = h + t.unsqueeze(-1) * (h[:, nxt] - h)
        other = p[..., 3] - sign * p[..., 2]  # distance to the other plane
        tol = 1e-6 * (p[..., 2].abs() + p[..., 3].abs())
        pts.append(p)
        oks.append(cross & (other >= -tol))
    pts_all = torch.cat(pts, dim=1)
    ok = torch.cat(oks, dim=1)
    pw = pts_all[..., 3]
    unbounded = (ok & (pw <= _W_EPS)).any(-1)
    # The point z = w = 0 of the triangle's plane has barycentrics proportional to dn x df.
    c = torch.linalg.cross(dn, df, dim=-1)
    unbounded |= (((c >= 0).all(-1) | (c <= 0).all(-1)) & (c != 0).any(-1))
    safe_w = torch.where(ok & (pw > _W_EPS), pw, torch.ones_like(pw))
    sx, sy = pts_all[..., 0] / safe_w, pts_all[..., 1] / safe_w
    use = ok & (pw > _W_EPS)
    inf = torch.full_like(sx, torch.inf)
    xmin = torch.where(use, sx, inf).amin(-1)
    xmax = torch.where(use, sx, -inf).amax(-1)
    ymin = torch.where(use, sy, inf).amin(-1)
    ymax = torch.where(use, sy, -inf).amax(-1)
    finite = torch.isfinite(sx) & torch.isfinite(sy)
    unbounded |= (use & ~finite).any(-1)
    return xmin, xmax, ymin, ymax, ok.any(-1) | unbounded, unbounded


def edge_neighbors(tri: Tensor, num_vertices: int | None = None) -> Tensor:
    """[F,3] the face across the edge opposite each corner (-1 on a boundary edge).

    Edge ``i`` of a face joins corners ``i+1`` and ``i+2``. On a non-manifold edge a face gets one
    of the other faces as its neighbour.
    """
    tri = tri.long()
    nf = tri.shape[0]
    nbr = torch.full((nf * 3,), -1, dtype=torch.long, device=tri.device)
    if nf == 0:
        return nbr.view(0, 3)
    nv = int(tri.max()) + 1 if num_vertices is None else num_vertices
    a = tri[:, [1, 2, 0]]
    b = tri[:, [2, 0, 1]]
    key = (torch.minimum(a, b) * nv + torch.maximum(a, b)).reshape(-1)
    key_sorted, order = torch.sort(key, stable=True)
    same = (key_sorted[:-1] == key_sorted[1:]).nonzero().squeeze(1)
    first, second = order[same], order[same + 1]
    nbr[first] = second // 3
    nbr[second] = first // 3
    return nbr.view(nf, 3)


class TorchRasterBackend(RasterBackend):
    """Rasterize / interpolate / texture / antialias in plain PyTorch ops."""

    name = "torch"

    def __init__(self, max_candidates: int = 1 << 20, aa_walk_steps: int = 64) -> None:
        self.max_candidates = int(max_candidates)
        self.aa_walk_steps = int(aa_walk_steps)
        self._topology: list[tuple[tuple, Tensor, Tensor]] = []
        self._vis_key: tuple | None = None
        self._vis_val: tuple[Tensor, Tensor, Tensor] | None = None
        self._vis_hold: Tensor | None = None

    # ------------------------------------------------------------------ rasterize
    def rasterize(self, pos_clip: Tensor, tri: Tensor, resolution: tuple[int, int],
                  cull_back: bool = False) -> tuple[Tensor, Tensor | None]:
        pos = batch_positions(pos_clip)
        check_tri(tri)
        height, width = int(resolution[0]), int(resolution[1])
        tri_l = tri.long().to(pos.device)
        bsz, nf = pos.shape[0], tri_l.shape[0]
        nv = pos.shape[1]
        npix = height * width
        data, valid = screen_triangles(pos, tri_l, height, width)
        valid = valid.reshape(-1)

        zbuf = torch.full((bsz * npix,), _EMPTY, dtype=torch.int64, device=pos.device)
        if nf > 0:
            self._zbuffer(data.detach().reshape(bsz * nf, 3, 4), valid, nf, height, width, zbuf, cull_back)
            clipped = (~valid).nonzero().squeeze(1)
            if clipped.numel() > 0:
                self._zbuffer_clipped(pos.detach(), tri_l, clipped, nf, height, width, zbuf)

        hit = (zbuf != _EMPTY).nonzero().squeeze(1)
        tid_bits = max(1, nf.bit_length())
        tid = zbuf[hit] & ((1 << tid_bits) - 1)
        b = torch.div(hit, npix, rounding_mode="floor")
        rem = hit - b * npix
        py = torch.div(rem, width, rounding_mode="floor")
        px = rem - py * width

        # Pixels of triangles with a corner at or behind the camera plane (drawn clipped).
        on_clipped = None
        if hit.numel() > 0 and not bool(valid.all()):
            on_clipped = ~valid[b * nf + tid]
            if not bool(on_clipped.any()):
                on_clipped = None
        if on_clipped is not None:
            clp = on_clipped.nonzero().squeeze(1)
            reg = (~on_clipped).nonzero().squeeze(1)
            hit_c, tid_c, b_c, px_c, py_c = hit[clp], tid[clp], b[clp], px[clp], py[clp]
            hit, tid, b, px, py = hit[reg], tid[reg], b[reg], px[reg], py[reg]

        # Differentiable recomputation for the visible pixels only.
        d = take(data.reshape(bsz * nf, 3, 4), b * nf + tid)
        x, y, inv_w, zn = d.unbind(-1)
        e = stack_last(_edge_functions(x, y, px.to(x.dtype) + 0.5, py.to(x.dtype) + 0.5))
        lam = e / _area2(x, y).unsqueeze(-1)
        persp = lam * inv_w
        bary = persp / persp.sum(-1, keepdim=True)
        zw = (lam * zn).sum(-1)
        vals = stack_last([bary[:, 0], bary[:, 1], zw, (tid + 1).to(bary.dtype)])
        if on_clipped is not None:
            # Homogeneous rasterization: barycentrics of the original triangle along the pixel's ray.
            corners = tri_l[tid_c] + (b_c * nv).unsqueeze(1)
            h = homogeneous_corners(take(pos.reshape(bsz * nv, 4), corners), height, width)
            ec = torch.stack(
                _homogeneous_edge_functions(h, px_c.to(h.dtype) + 0.5, py_c.to(h.dtype) + 0.5), dim=-1
            )
            bary_c = ec / ec.sum(-1, keepdim=True)
            zw_c = (ec * h[..., 2]).sum(-1) / (ec * h[..., 3]).sum(-1)
            vals_c = stack_last([bary_c[:, 0], bary_c[:, 1], zw_c, (tid_c + 1).to(bary_c.dtype)])
            vals = torch.cat([vals, vals_c])
            hit = torch.cat([hit, hit_c])
        rast = pos.new_zeros(bsz * npix, 4).index_put((hit,), vals)
        return rast.view(bsz, height, width, 4), None

    def _zbuffer(self, data: Tensor, valid: Tensor, nf: int, height: int, width: int, zbuf: Tensor,
                 cull_back: bool = False) -> None:
        """Fill ``zbuf`` [B*H*W] with the smallest (depth, triangle) key per pixel (``cull_back``:
        front-facing triangles only; rows grow downwards, so counter-clockwise ones have area < 0)."""
        x, y, zn = data[..., 0], data[..., 1], data[..., 3]
        area = _area2(x, y)
        # Pixel centres inside [min, max] of the projected corners (min/max of three tensors: a
        # reduction over a last dimension of 3 is several times slower on CPU).
        fx0 = torch.ceil(_min3(x).clamp(-1.0, width + 1.0) - 0.5).clamp(min=0)
        fx1 = torch.floor(_max3(x).clamp(-1.0, width + 1.0) - 0.5).clamp(max=width - 1)
        fy0 = torch.ceil(_min3(y).clamp(-1.0, height + 1.0) - 0.5).clamp(min=0)
        fy1 = torch.floor(_max3(y).clamp(-1.0, height + 1.0) - 0.5).clamp(max=height - 1)
        ok = (
            valid
            & (area != 0)
            & torch.isfinite(area)
            & (fx1 >= fx0)
            & (fy1 >= fy0)
            & (_max3(zn) >= -1)
            & (_min3(zn) <= 1)
        )
        if cull_back:
            ok &= area < 0
        inst = ok.nonzero().squeeze(1)
        if inst.numel() == 0:
            return
        corner = stack_last([x, y, zn])  # [BF,3,3]

        def depth(row: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
            c = corner[row]
            cx, cy, cz = c[..., 0], c[..., 1], c[..., 2]
            e0, e1, e2 = _edge_functions(cx, cy, px.to(cx.dtype) + 0.5, py.to(cx.dtype) + 0.5)
            a = area[row]
            s = torch.sign(a)
            z = (e0 * cz[:, 0] + e1 * cz[:, 1] + e2 * cz[:, 2]) / a
            inside = (e0 * s >= 0) & (e1 * s >= 0) & (e2 * s >= 0) & (z >= -1) & (z <= 1)
            return inside, z

        self._scan(inst, inst, fx0[inst].long(), fy0[inst].long(), fx1[inst].long(), fy1[inst].long(), depth,
                   nf, height, width, zbuf)

    def _zbuffer_clipped(
        self, pos: Tensor, tri: Tensor, inst: Tensor, nf: int, height: int, width: int, zbuf: Tensor
    ) -> None:
        """Add the triangles ``inst`` (indices into B*F) that have a corner at ``w <= 1e-8``.

        They are clipped to ``-w <= z <= w``: a pixel is covered where its ray meets the triangle in
        front of the camera (homogeneous edge functions) with ``z/w`` in ``[-1, 1]``; the box of
        candidate pixels is the screen extent of the clipped polygon.
        """
        nv = pos.shape[1]
        bt = torch.div(inst, nf, rounding_mode="floor")
        corners = tri[inst - bt * nf] + (bt * nv).unsqueeze(1)
        h = homogeneous_corners(pos.reshape(-1, 4)[corners], height, width)  # [N,3,4]
        det = _homogeneous_det(h)
        xmin, xmax, ymin, ymax, any_part, unbounded = _clipped_extent(h)
        full_x, full_y = torch.zeros_like(xmin), torch.zeros_like(ymin)
        fx0 = torch.where(unbounded, full_x, torch.ceil(xmin.clamp(-1.0, width + 1.0) - 0.5).clamp(min=0))
        fx1 = torch.where(unbounded, full_x + (width - 1), torch.floor(xmax.clamp(-1.0, width + 1.0) - 0.5))
        fy0 = torch.where(unbounded, full_y, torch.ceil(ymin.clamp(-1.0, height + 1.0) - 0.5).clamp(min=0))
        fy1 = torch.where(unbounded, full_y + (height - 1), torch.floor(ymax.clamp(-1.0, height + 1.0) - 0.5))
        fx1, fy1 = fx1.clamp(max=width - 1), fy1.clamp(max=height - 1)
        ok = any_part & (det != 0) & torch.isfinite(det) & (fx1 >= fx0) & (fy1 >= fy0)
        rows = ok.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        sgn = torch.sign(det)

        def depth(row: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
            hr = h[row]
            e0, e1, e2 = _homogeneous_edge_functions(hr, px.to(hr.dtype) + 0.5, py.to(hr.dtype) + 0.5)
            s = sgn[row]
            num = e0 * hr[:, 0, 2] + e1 * hr[:, 1, 2] + e2 * hr[:, 2, 2]
            den = e0 * hr[:, 0, 3] + e1 * hr[:, 1, 3] + e2 * hr[:, 2, 3]
            inside = (e0 * s >= 0) & (e1 * s >= 0) & (e2 * s >= 0) & (den * s > 0)
            z = num / torch.where(inside, den, torch.ones_like(den))
            inside = inside & (z >= -1) & (z <= 1)
            return inside, z

        self._scan(inst[rows], rows, fx0[rows].long(), fy0[rows].long(), fx1[rows].long(), fy1[rows].long(),
                   depth, nf, height, width, zbuf)

    def _scan(
        self,
        inst: Tensor,
        row: Tensor,
        x0: Tensor,
        y0: Tensor,
        x1: Tensor,
        y1: Tensor,
        depth: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
        nf: int,
        height: int,
        width: int,
        zbuf: Tensor,
    ) -> None:
        """Test the pixels of each box [x0, x1] x [y0, y1] (inclusive) and z-buffer the covered ones.

        ``inst`` indexes B*F (batch element and triangle id of the key), ``row`` is what ``depth``
        receives per candidate pixel with its column and row; ``depth`` returns (covered, z/w).
        """
        dev = zbuf.device
        nx = x1 - x0 + 1
        ny = y1 - y0 + 1
        order = torch.arange(inst.numel(), device=dev)
        order, x0, y0, nx, ny = self._split_large(order, x0, y0, nx, ny)
        inst, row = inst[order], row[order]
        counts = nx * ny

        tid_bits = max(1, nf.bit_length())
        zscale = float(2 ** (62 - tid_bits) - 1)
        starts = torch.cumsum(counts, 0) - counts
        chunk_of = torch.div(starts, self.max_candidates, rounding_mode="floor")
        sizes = torch.unique_consecutive(chunk_of, return_counts=True)[1].tolist()
        lo = 0
        for size in sizes:
            hi = lo + size
            cnt = counts[lo:hi]
            item = torch.repeat_interleave(torch.arange(hi - lo, device=dev), cnt)
            offs = torch.arange(item.numel(), device=dev) - (torch.cumsum(cnt, 0) - cnt)[item]
            nxi = nx[lo:hi][item]
            rr = torch.div(offs, nxi, rounding_mode="floor")
            px = x0[lo:hi][item] + (offs - rr * nxi)
            py = y0[lo:hi][item] + rr
            ins = inst[lo:hi][item]
            inside, z = depth(row[lo:hi][item], px, py)
            zq = ((z.double().clamp(-1, 1) + 1.0) * (0.5 * zscale)).long()
            bt = torch.div(ins, nf, rounding_mode="floor")
            key = torch.where(inside, (zq << tid_bits) | (ins - bt * nf), _EMPTY)
            pix = (bt * height + py) * width + px
            zbuf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
            lo = hi

    def _split_large(
        self, inst: Tensor, x0: Tensor, y0: Tensor, nx: Tensor, ny: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Split boxes with more than ``max_candidates`` pixels into row bands."""
        counts = nx * ny
        big = counts > self.max_candidates
        if not bool(big.any()):
            return inst, x0, y0, nx, ny
        rows = torch.where(big, torch.clamp(self.max_candidates // nx, min=1), ny)
        bands = torch.div(ny + rows - 1, rows, rounding_mode="floor")
        rep = torch.repeat_interleave(torch.arange(inst.numel(), device=inst.device), bands)
        band = torch.arange(rep.numel(), device=inst.device) - (torch.cumsum(bands, 0) - bands)[rep]
        start = y0[rep] + band * rows[rep]
        height = torch.minimum(rows[rep], ny[rep] - band * rows[rep])
        return inst[rep], x0[rep], start, nx[rep], height

    # ------------------------------------------------------------------ interpolate
    def _visible(self, rast: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Flat indices of covered pixels, their triangle ids and batch indices (cached per rast)."""
        key = (rast.data_ptr(), tuple(rast.shape), rast._version, rast.device)
        if self._vis_key == key and self._vis_val is not None:
            return self._vis_val
        bsz, height, width, _ = rast.shape
        tid = rast.detach().reshape(-1, 4)[:, 3].long() - 1
        vis = (tid >= 0).nonzero().squeeze(1)
        b = torch.div(vis, height * width, rounding_mode="floor")
        val = (vis, tid[vis], b)
        # Hold a (graph-free) view so the storage cannot be recycled while the key is cached.
        self._vis_key, self._vis_val, self._vis_hold = key, val, rast.detach()
        return val

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        check_tri(tri)
        if attr.dim() == 2:
            attr = attr.unsqueeze(0)
        bsz, height, width, _ = rast.shape
        battr, nv, nc = attr.shape
        if battr not in (1, bsz):
            raise HeadgenError(f"interpolate: attr batch {battr} must be 1 or match rast batch {bsz}")
        vis, tid, b = self._visible(rast)
        corners = tri.long().to(attr.device)[tid]
        if battr == 1:
            a = take(attr[0], corners)
        else:
            a = take(attr.reshape(bsz * nv, nc), corners + (b * nv).unsqueeze(1))
        uv = take(rast.reshape(-1, 4), vis)[:, :2].to(a.dtype)
        u, v = uv[:, 0:1], uv[:, 1:2]
        val = a[:, 2] + u * (a[:, 0] - a[:, 2]) + v * (a[:, 1] - a[:, 2])
        out = val.new_zeros(bsz * height * width, nc).index_put((vis,), val)
        return out.view(bsz, height, width, nc)

    # ------------------------------------------------------------------ texture
    def texture(
        self,
        tex: Tensor,
        uv: Tensor,
        filter_mode: str = "linear",
        boundary_mode: str = "wrap",
    ) -> Tensor:
        if tex.dim() == 3:
            tex = tex.unsqueeze(0)
        if tex.dim() != 4 or uv.dim() != 4 or uv.shape[-1] != 2:
            raise HeadgenError(
                f"texture: expected tex [B,h,w,C] or [h,w,C] and uv [B,H,W,2], got "
                f"{tuple(tex.shape)} and {tuple(uv.shape)}"
            )
        if filter_mode not in ("linear", "nearest"):
            raise NotImplementedError(
                f"texture filter_mode '{filter_mode}' (mipmapping) is not implemented in the torch "
                "backend; use 'linear' or 'nearest'"
            )
        if boundary_mode not in ("wrap", "clamp", "zero"):
            raise NotImplementedError(
                f"texture boundary_mode '{boundary_mode}' is not implemented in the torch backend; "
                "use 'wrap', 'clamp' or 'zero'"
            )
        btex, th, tw, nc = tex.shape
        bsz = uv.shape[0]
        if btex not in (1, bsz):
            raise HeadgenError(f"texture: tex batch {btex} must be 1 or match uv batch {bsz}")
        uv = uv.to(tex.dtype)
        # Texel space: column from u, row from 1 - v (row 0 is the top of the image).
        x = uv[..., 0] * tw
        y = (1.0 - uv[..., 1]) * th
        base = 0
        if btex > 1:
            base = (torch.arange(bsz, device=uv.device) * (th * tw)).view(bsz, 1, 1)
        flat = tex.reshape(-1, nc)

        def fetch(ix: Tensor, iy: Tensor) -> Tensor:
            mask = None
            if boundary_mode == "wrap":
                ix, iy = torch.remainder(ix, tw), torch.remainder(iy, th)
            else:
                if boundary_mode == "zero":
                    mask = ((ix >= 0) & (ix < tw) & (iy >= 0) & (iy < th)).unsqueeze(-1)
                ix, iy = ix.clamp(0, tw - 1), iy.clamp(0, th - 1)
            val = take(flat, base + iy * tw + ix)
            return val if mask is None else val * mask

        if filter_mode == "nearest":
            return fetch(torch.floor(x).long(), torch.floor(y).long())
        x = x - 0.5
        y = y - 0.5
        if boundary_mode == "clamp":
            x = x.clamp(0.0, tw - 1.0)
            y = y.clamp(0.0, th - 1.0)
        fx0, fy0 = torch.floor(x.detach()), torch.floor(y.detach())
        wx = (x - fx0).unsqueeze(-1)
        wy = (y - fy0).unsqueeze(-1)
        ix0, iy0 = fx0.long(), fy0.long()
        t00 = fetch(ix0, iy0)
        t01 = fetch(ix0 + 1, iy0)
        t10 = fetch(ix0, iy0 + 1)
        t11 = fetch(ix0 + 1, iy0 + 1)
        top = t00 + wx * (t01 - t00)
        bottom = t10 + wx * (t11 - t10)
        return top + wy * (bottom - top)

    # ------------------------------------------------------------------ antialias
    def _neighbors(self, tri: Tensor, num_vertices: int) -> Tensor:
        key = (tri.data_ptr(), tuple(tri.shape), tri._version, tri.device, num_vertices)
        for k, _, nbr in self._topology:
            if k == key:
                return nbr
        nbr = edge_neighbors(tri, num_vertices)
        # Keep the tri tensor alive with its entry so its storage cannot be reused under our key.
        self._topology = [(key, tri, nbr)] + self._topology[:3]
        return nbr

    def antialias(self, color: Tensor, rast: Tensor, pos_clip: Tensor, tri: Tensor) -> Tensor:
        check_tri(tri)
        pos = batch_positions(pos_clip)
        bsz, height, width, nc = color.shape
        if tuple(rast.shape[:3]) != (bsz, height, width):
            raise HeadgenError(f"antialias: color {tuple(color.shape)} and rast {tuple(rast.shape)} differ")
        bpos, nv = pos.shape[0], pos.shape[1]
        if bpos not in (1, bsz):
            raise HeadgenError(f"antialias: pos batch {bpos} must be 1 or match the image batch {bsz}")
        tri_l = tri.long().to(pos.device)
        nf = tri_l.shape[0]
        npix = height * width
        r = rast.detach()
        tid = r[..., 3].long() - 1
        zw = r[..., 2].reshape(-1)

        ih = (tid[:, :, :-1] != tid[:, :, 1:]).nonzero()
        iv = (tid[:, :-1, :] != tid[:, 1:, :]).nonzero()
        pa_h = (ih[:, 0] * height + ih[:, 1]) * width + ih[:, 2]
        pa_v = (iv[:, 0] * height + iv[:, 1]) * width + iv[:, 2]
        pa = torch.cat([pa_h, pa_v])
        pb = torch.cat([pa_h + 1, pa_v + width])
        if pa.numel() == 0:
            return color
        horiz = torch.arange(pa.numel(), device=pa.device) < pa_h.numel()
        tflat = tid.reshape(-1)
        ta, tb = tflat[pa], tflat[pb]
        a_front = (ta >= 0) & ((tb < 0) | (zw[pa] <= zw[pb]))
        f = torch.where(a_front, pa, pb)
        o = torch.where(a_front, pb, pa)
        tri_id = torch.where(a_front, ta, tb)
        bidx = torch.div(f, npix, rounding_mode="floor")
        pb_idx = bidx if bpos > 1 else torch.zeros_like(bidx)

        def centre(p: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
            rem = p - torch.div(p, npix, rounding_mode="floor") * npix
            row = torch.div(rem, width, rounding_mode="floor")
            return (rem - row * width).to(dtype) + 0.5, row.to(dtype) + 0.5

        with torch.no_grad():
            data, valid = screen_triangles(pos.detach(), tri_l, height, width)
            data = data.reshape(bpos * nf, 3, 4)
            area = _area2(data[..., 0], data[..., 1])  # [Bp*F]
            facing = torch.sign(area)
            regular = valid.reshape(-1)
            valid = regular & (area != 0)
            clipped = None
            if not bool(regular.all()):
                # Triangles with a corner at w <= 1e-8 are drawn clipped: they are surface (not
                # boundary) for their neighbours, facing by the sign of their homogeneous
                # determinant (the orientation of their part in front of the camera). Their own
                # edges are not followed: pairs that start on or walk into one are left alone.
                clipped = ~regular
                ci = clipped.nonzero().squeeze(1)
                bt = torch.div(ci, nf, rounding_mode="floor")
                corners = tri_l[ci - bt * nf] + (bt * nv).unsqueeze(1)
                det = _homogeneous_det(homogeneous_corners(pos.detach().reshape(-1, 4)[corners], height, width))
                facing = facing.index_put((ci,), torch.sign(det))
                valid = valid.index_put((ci,), (det != 0) & torch.isfinite(det))
            nbr_all = self._neighbors(tri_l, nv)
            xf, yf = centre(f, data.dtype)
            xo, yo = centre(o, data.dtype)
            found_tri = torch.full_like(f, -1)
            found_edge = torch.zeros_like(f)
            found_sign = torch.zeros_like(xf)
            # Walk from the front pixel's triangle along the segment to the other pixel centre,
            # crossing non-silhouette edges, until a silhouette edge is crossed or the segment
            # ends inside the current triangle. On a finely tessellated surface the triangle that
            # owns the silhouette edge is often not the one covering the pixel centre.
            cur = tri_id.clone()
            active = torch.arange(f.numel(), device=f.device)
            if clipped is not None:
                active = active[~clipped[pb_idx * nf + tri_id]]
            for _ in range(self.aa_walk_steps):
                inst = pb_idx[active] * nf + cur[active]
                d = data[inst]
                x, y = d[..., 0], d[..., 1]
                sg = torch.sign(area[inst]).unsqueeze(-1)
                ef = stack_last(_edge_functions(x, y, xf[active], yf[active])) * sg
                eo = stack_last(_edge_functions(x, y, xo[active], yo[active])) * sg
                leaving = eo < ef  # edge functions that decrease along the segment
                t_exit = torch.where(leaving, ef / torch.where(leaving, ef - eo, 1.0), torch.inf)
                t_out, edge = t_exit.min(-1)
                exits = t_out < 1.0
                nbr = nbr_all[cur[active], edge]
                ninst = pb_idx[active] * nf + nbr.clamp(min=0)
                sil = (nbr < 0) | ~valid[ninst] | (facing[ninst] != facing[inst])
                hit = exits & sil
                idx = active[hit]
                found_tri[idx] = cur[idx]
                found_edge[idx] = edge[hit]
                found_sign[idx] = sg[hit, 0]
                go = exits & ~sil
                if clipped is not None:
                    go = go & ~clipped[ninst]
                active = active[go]
                cur[active] = nbr[go]
                if active.numel() == 0:
                    break
            keep = (found_tri >= 0).nonzero().squeeze(1)
            # Each edge is handled by the pixel pairs it crosses most squarely: horizontal pairs
            # for mostly vertical edges, vertical pairs for mostly horizontal ones (so a moving
            # edge changes the summed coverage by its swept area, not by up to twice that).
            d = data[pb_idx[keep] * nf + found_tri[keep]]
            e = found_edge[keep].unsqueeze(1)
            jdx, kdx = torch.remainder(e + 1, 3), torch.remainder(e + 2, 3)
            dx = (d[..., 0].gather(1, kdx) - d[..., 0].gather(1, jdx)).squeeze(1)
            dy = (d[..., 1].gather(1, kdx) - d[..., 1].gather(1, jdx)).squeeze(1)
            oriented = torch.where(horiz[keep], dy.abs() >= dx.abs(), dx.abs() > dy.abs())
            keep = keep[oriented]
        if keep.numel() == 0:
            return color

        # Differentiable crossing position for the kept pairs only.
        f, o, bk = f[keep], o[keep], pb_idx[keep]
        tri_id, edge, sk = found_tri[keep], found_edge[keep], found_sign[keep]
        corners = tri_l[tri_id]
        vj = corners.gather(1, torch.remainder(edge + 1, 3).unsqueeze(1)).squeeze(1)
        vk = corners.gather(1, torch.remainder(edge + 2, 3).unsqueeze(1)).squeeze(1)
        flat_pos = pos.reshape(-1, pos.shape[-1])
        pj, pk = take(flat_pos, bk * pos.shape[1] + vj), take(flat_pos, bk * pos.shape[1] + vk)
        xj = (pj[:, 0] / pj[:, 3] + 1.0) * (0.5 * width)
        yj = (1.0 - pj[:, 1] / pj[:, 3]) * (0.5 * height)
        xk = (pk[:, 0] / pk[:, 3] + 1.0) * (0.5 * width)
        yk = (1.0 - pk[:, 1] / pk[:, 3]) * (0.5 * height)
        xf, yf = centre(f, xj.dtype)
        xo, yo = centre(o, xj.dtype)
        ef = ((xk - xj) * (yf - yj) - (yk - yj) * (xf - xj)) * sk
        eo = ((xk - xj) * (yo - yj) - (yk - yj) * (xo - xj)) * sk
        alpha = (ef / (ef - eo)).clamp(0.0, 1.0).to(color.dtype)
        flat = color.reshape(-1, nc)
        delta = (alpha - 0.5).unsqueeze(1) * (take(flat, f) - take(flat, o))
        target = torch.where(alpha.detach() > 0.5, o, f)
        return flat.index_add(0, target, delta).view(bsz, height, width, nc)
