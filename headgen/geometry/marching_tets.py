"""Marching tetrahedra in pure PyTorch, differentiable w.r.t. the SDF and the vertex positions.

Sign convention: ``sdf < 0`` inside, ``sdf >= 0`` outside. Within a tetrahedron the SDF is
linear, so its zero set is a plane and the surface piece is a triangle (1 or 3 corners inside)
or a planar convex quad (2 inside), cut into two triangles. Every crossing edge ``(a, b)`` gets
one vertex ``p = (p_a s_b - p_b s_a) / (s_b - s_a)``, shared by all tetrahedra around that edge
(edges are deduplicated by their sorted vertex pair), so neighbouring tetrahedra share surface
vertices and the output is watertight whenever the surface does not leave the grid. Gradients
reach ``sdf`` and ``pos`` through that formula.

Triangles are wound counter-clockwise seen from outside (``(v1 - v0) x (v2 - v0)`` points toward
increasing SDF) for positively oriented tetrahedra (``det[v1 - v0, v2 - v0, v3 - v0] > 0``, as in
:mod:`headgen.geometry.tets`). The 16-case table is derived once from a reference tetrahedron
rather than typed in; since the orientation of the piece can only flip if the tetrahedron
inverts, it holds for every positively oriented tetrahedron and every SDF value.
"""

from __future__ import annotations

import torch
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.gather import take

TET_EDGES = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]], dtype=torch.long)


def _build_tables() -> tuple[Tensor, Tensor]:
    """(triangles [16,2,3] local edge ids, -1 = none; count [16]) for code = sum(inside_i << i)."""
    ref = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    tris = torch.full((16, 2, 3), -1, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    for code in range(16):
        inside = [(code >> i) & 1 == 1 for i in range(4)]
        if all(inside) or not any(inside):
            continue
        s = torch.tensor([-1.0 if x else 1.0 for x in inside], dtype=torch.float64)
        # Gradient of the linear interpolant s(x) = s0 + g . (x - v0) on the reference tet.
        g = s[1:] - s[0]
        edges = [e for e, (a, b) in enumerate(TET_EDGES.tolist()) if inside[a] != inside[b]]
        pts = torch.stack([0.5 * (ref[TET_EDGES[e, 0]] + ref[TET_EDGES[e, 1]]) for e in edges])
        center = pts.mean(0)
        # Order the corners of the (convex, planar) piece counter-clockwise around g.
        u = pts[0] - center
        u = u - (u @ g) / (g @ g) * g
        v = torch.linalg.cross(g / g.norm(), u)
        ang = [float(torch.atan2((p - center) @ v, (p - center) @ u)) for p in pts]
        order = [edges[i] for i in sorted(range(len(edges)), key=lambda i: ang[i])]
        if len(order) == 3:
            pieces = [order]
        else:
            pieces = [[order[0], order[1], order[2]], [order[0], order[2], order[3]]]
        for t, piece in enumerate(pieces):
            p = torch.stack([0.5 * (ref[TET_EDGES[e, 0]] + ref[TET_EDGES[e, 1]]) for e in piece])
            n = torch.linalg.cross(p[1] - p[0], p[2] - p[0])
            if float(n @ g) <= 0:
                raise AssertionError("marching tets table: a piece is not oriented outward")
            tris[code, t] = torch.tensor(piece)
        count[code] = len(pieces)
    return tris, count


TRI_TABLE, TRI_COUNT = _build_tables()


def marching_tets(pos: Tensor, sdf: Tensor, tets: Tensor) -> tuple[Tensor, Tensor]:
    """Extract the zero level set of ``sdf`` on the tetrahedral mesh (``pos`` [V,3], ``tets`` [T,4]).

    Returns ``(vertices [M,3], faces [F,3] long)``. ``tets`` may be any subset of a conforming
    tetrahedral mesh (e.g. the tetrahedra of the cubes that cross the surface): tetrahedra that
    do not cross contribute nothing. Differentiable w.r.t. ``pos`` and ``sdf``.
    """
    if pos.dim() != 2 or pos.shape[-1] != 3:
        raise HeadgenError(f"marching_tets: pos must be [V,3], got {tuple(pos.shape)}")
    if sdf.shape != pos.shape[:1]:
        raise HeadgenError(f"marching_tets: sdf must be [V] = [{pos.shape[0]}], got {tuple(sdf.shape)}")
    if tets.dim() != 2 or tets.shape[-1] != 4:
        raise HeadgenError(f"marching_tets: tets must be [T,4], got {tuple(tets.shape)}")
    dev = pos.device
    tets = tets.long()
    with torch.no_grad():
        inside = sdf.detach() < 0
        occ = inside[tets]  # [T,4]
        code = (occ.long() * torch.tensor([1, 2, 4, 8], device=dev)).sum(-1)
        valid = (code > 0) & (code < 15)
        tets = tets[valid]
        code = code[valid]
        if tets.shape[0] == 0:
            return pos.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=dev)
        edges = tets[:, TET_EDGES.to(dev)]  # [T,6,2]
        crossing = occ[valid][:, TET_EDGES.to(dev)]
        crossing = crossing[..., 0] != crossing[..., 1]  # [T,6]
        lo = torch.minimum(edges[..., 0], edges[..., 1])
        hi = torch.maximum(edges[..., 0], edges[..., 1])
        key = lo * pos.shape[0] + hi
        uniq, inverse = torch.unique(key[crossing], return_inverse=True)
        edge_vertex = torch.full(crossing.shape, -1, dtype=torch.long, device=dev)
        edge_vertex[crossing] = inverse
        a = torch.div(uniq, pos.shape[0], rounding_mode="floor")
        b = uniq % pos.shape[0]

    sa, sb = take(sdf, a), take(sdf, b)
    # sa and sb have opposite signs (one < 0, one >= 0), so the denominator is never zero.
    denom = sb - sa
    verts = (take(pos, a) * sb[:, None] - take(pos, b) * sa[:, None]) / denom[:, None]

    with torch.no_grad():
        table = TRI_TABLE.to(dev)[code]  # [T,2,3]
        ntri = TRI_COUNT.to(dev)[code]  # [T]
        tri_valid = torch.arange(2, device=dev)[None, :] < ntri[:, None]  # [T,2]
        local = table[tri_valid]  # [F,3] local edge ids
        owner = torch.arange(tets.shape[0], device=dev)[:, None].expand(-1, 2)[tri_valid]
        faces = edge_vertex[owner[:, None], local]
    return verts, faces


def mesh_edges(faces: Tensor) -> tuple[Tensor, Tensor]:
    """Unique undirected edges [E,2] (sorted pairs) of a triangle mesh, and for each face the ids
    [F,3] of its edges ``(v0, v1), (v1, v2), (v2, v0)``."""
    e = torch.stack([faces, faces.roll(-1, dims=1)], dim=-1)  # [F,3,2]
    lo, hi = e.min(-1).values, e.max(-1).values
    n = int(faces.max()) + 1 if faces.numel() else 1
    uniq, inverse = torch.unique((lo * n + hi).reshape(-1), return_inverse=True)
    edges = torch.stack([torch.div(uniq, n, rounding_mode="floor"), uniq % n], dim=-1)
    return edges, inverse.reshape(faces.shape)


def is_watertight(faces: Tensor) -> bool:
    """Every edge is used by exactly two faces, once in each direction (closed and consistently
    oriented)."""
    if faces.numel() == 0:
        return False
    directed = torch.stack([faces, faces.roll(-1, dims=1)], dim=-1).reshape(-1, 2)
    n = int(faces.max()) + 1
    fwd = directed[:, 0] * n + directed[:, 1]
    rev = directed[:, 1] * n + directed[:, 0]
    if torch.unique(fwd).numel() != fwd.numel():
        return False
    return bool(torch.isin(rev, fwd).all())


__all__ = ["TET_EDGES", "TRI_COUNT", "TRI_TABLE", "is_watertight", "marching_tets", "mesh_edges"]
