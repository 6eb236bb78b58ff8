"""UV charts by projection: faces grouped by the direction their (smoothed) normal faces, each group
projected flat onto the plane across that direction.

The charts :func:`headgen.geometry.unwrap.unwrap` uses by default (``method="normal-charts"``).
Marching-tetrahedra surfaces (DMTet, NeRF exports) are hundreds of thousands of small, irregular
triangles; xatlas's chart growing takes about a minute for 200k of them and cuts them into
thousands of charts. Here every face takes the nearest of 26 directions (the faces, edges and
corners of a cube) to its normal smoothed over a few rings, the connected faces of one direction
form a chart, and the chart is projected along its direction: at most 27.6 degrees between a
smoothed normal and its direction, so projected lengths shrink by at most 12% (cos 27.6 = 0.886).
A projection is one-to-one on each face that faces its direction, but a chart can still fold over
itself (an ear in front of the scalp): :func:`overlapping_charts` finds those by rasterising the
charts twice with opposite depth orders, and the caller cuts them until they lie flat.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.geometry.marching_tets import mesh_edges


def directions() -> Tensor:
    """[26,3] unit directions: the faces, edges and corners of a cube seen from its centre."""
    d = [[x, y, z] for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)]
    return F.normalize(torch.tensor(d, dtype=torch.float64), dim=1)


def plane_basis(d: Tensor) -> tuple[Tensor, Tensor]:
    """(e1, e2) orthonormal across unit ``d`` with e1 x e2 = d, so counter-clockwise faces facing
    ``d`` stay counter-clockwise in (e1, e2)."""
    up = torch.tensor([0.0, 1.0, 0.0], dtype=d.dtype) if abs(float(d[1])) < 0.9 else torch.tensor(
        [1.0, 0.0, 0.0], dtype=d.dtype)
    e1 = F.normalize(torch.linalg.cross(up, d), dim=0)
    return e1, torch.linalg.cross(d, e1)


def face_adjacency(faces: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b): the pairs of faces that share an edge (by :func:`~headgen.geometry.marching_tets.mesh_edges`)."""
    _, face_edges = mesh_edges(faces)
    edge, order = face_edges.reshape(-1).sort(stable=True)
    face = order // 3
    same = edge[1:] == edge[:-1]
    return face[:-1][same], face[1:][same]


def normal_charts(v_pos: Tensor, faces: Tensor, smoothing: int = 3) -> tuple[Tensor, Tensor]:
    """(chart index per face [F], per-corner UVs in scene units [F,3,2], each chart in its own plane).

    Normals are smoothed by ``smoothing`` rounds of face -> vertex -> face averaging (area
    weighted), so that the jitter of marching-tetrahedra faces does not scatter them over
    directions; a face whose own normal turns away from its smoothed direction (it would flip in
    projection) takes the direction of its own normal instead."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v = v_pos.detach().cpu().double()
    f = faces.detach().cpu().long()
    corners = v[f]
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    idx = f.reshape(-1)
    smooth = cross
    for _ in range(smoothing):
        vn = torch.zeros_like(v).index_add_(0, idx, smooth.repeat_interleave(3, dim=0))
        smooth = vn[f].sum(1)
    dirs = directions()
    label = (F.normalize(smooth, dim=1) @ dirs.T).argmax(1)
    own = F.normalize(cross, dim=1, eps=1e-30)
    turned = (own * dirs[label]).sum(1) < 0.1
    label[turned] = (own[turned] @ dirs.T).argmax(1)

    a, b = face_adjacency(f)
    keep = label[a] == label[b]
    graph = coo_matrix((np.ones(int(keep.sum())), (a[keep].numpy(), b[keep].numpy())), shape=(len(f), len(f)))
    _, chart = connected_components(graph, directed=False)

    uv = torch.empty(len(f), 3, 2, dtype=torch.float64)
    for k in label.unique().tolist():
        sel = label == k
        e1, e2 = plane_basis(dirs[k])
        uv[sel] = torch.stack([corners[sel] @ e1, corners[sel] @ e2], dim=-1)
    return torch.from_numpy(chart).long(), uv


def overlapping_charts(uv: Tensor, chart: Tensor, faces: Tensor, texels: float = 2.0e6) -> Tensor:
    """[C] bool: charts (``chart`` [F] in 0..C-1, corner UVs ``uv`` [F,3,2]) that overlap themselves
    (:func:`fold_cells` > 0)."""
    return fold_cells(uv, chart, faces, texels) > 0


def fold_cells(uv: Tensor, chart: Tensor, faces: Tensor, texels: float = 2.0e6) -> Tensor:
    """[C] per chart, the grid cells two of its faces cover (of about ``texels`` for all charts).

    The charts are laid out side by side (shelves, by height) on a grid of about ``texels`` cells
    and rasterised twice, faces drawn nearest-first in index order and then in reverse: where the
    two passes see different faces, two faces of one chart cover the same cell. Cells where the two
    faces share a vertex (``faces`` [F,3], the mesh's) are neighbours meeting at an edge the
    rasteriser counts for both, not a fold."""
    from headgen.render.raster import get_backend

    n = int(chart.max()) + 1
    idx = chart[:, None].expand(-1, 2)
    lo = torch.full((n, 2), math.inf, dtype=uv.dtype).scatter_reduce(0, idx, uv.amin(1), "amin")
    hi = torch.full((n, 2), -math.inf, dtype=uv.dtype).scatter_reduce(0, idx, uv.amax(1), "amax")
    size = hi - lo
    area = float((size[:, 0] * size[:, 1]).sum())
    cell = math.sqrt(max(area, 1e-30) * 1.5 / texels)
    width = math.sqrt(max(area, 1e-30) * 1.5)
    offset = torch.zeros(n, 2, dtype=uv.dtype)
    x = y = row = 0.0
    for c in torch.argsort(-size[:, 1]).tolist():  # shelves, tallest first
        w, h = float(size[c, 0]) + 2 * cell, float(size[c, 1]) + 2 * cell
        if x + w > width and x > 0:
            x, y, row = 0.0, y + row, 0.0
        offset[c, 0], offset[c, 1] = x + cell, y + cell
        x, row = x + w, max(row, h)
    res = (int(math.ceil((y + row) / cell)) + 1, int(math.ceil(max(width, x) / cell)) + 1)
    p = uv - lo[chart][:, None] + offset[chart][:, None]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    mirrored = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0
    p[mirrored] = p[mirrored][:, [0, 2, 1]]  # the rasteriser fills counter-clockwise triangles
    clip_xy = torch.stack([p[..., 0] / (res[1] * cell), p[..., 1] / (res[0] * cell)], -1) * 2 - 1
    num = len(uv)
    tri = torch.arange(num * 3, dtype=torch.int32).view(-1, 3)
    backend = get_backend("torch", torch.device("cpu"))
    seen = []
    for reverse in (False, True):
        depth = torch.arange(num, dtype=torch.float64) / max(num, 1)
        depth = (1 - depth if reverse else depth) * 0.98 - 0.49
        clip = torch.cat([clip_xy, depth[:, None, None].expand(-1, 3, 1), torch.ones(num, 3, 1, dtype=uv.dtype)], -1)
        rast, _ = backend.rasterize(clip.reshape(1, -1, 4).float(), tri, res)
        seen.append(rast[0, ..., 3].long())
    both = (seen[0] != seen[1]) & (seen[0] > 0)
    fa, fb = seen[0][both] - 1, seen[1][both] - 1
    f = faces.detach().cpu().long()
    apart = ~(f[fa][:, :, None] == f[fb][:, None, :]).flatten(1).any(1)
    return torch.bincount(chart[fa[apart]], minlength=n)


__all__ = ["directions", "face_adjacency", "fold_cells", "normal_charts", "overlapping_charts", "plane_basis"]
