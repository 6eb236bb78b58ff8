"""Mesh Laplacians."""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_laplacian(num_vertices: int, faces: Tensor) -> Tensor:
    """Sparse uniform (umbrella) Laplacian L = I - D^-1 A as a [V,V] COO tensor.

    ``L @ v`` is each vertex minus the mean of its one-ring neighbours.
    """
    f = faces.long()
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=0)
    edges = torch.cat([edges, edges.flip(1)], dim=0)
    edges = torch.unique(edges, dim=0)
    deg = torch.zeros(num_vertices, device=f.device).index_add_(0, edges[:, 0], torch.ones(len(edges), device=f.device))
    vals = -1.0 / deg.clamp_min(1)[edges[:, 0]]
    diag = torch.arange(num_vertices, device=f.device)
    idx = torch.cat([edges.T, torch.stack([diag, diag])], dim=1)
    val = torch.cat([vals, torch.ones(num_vertices, device=f.device)])
    return torch.sparse_coo_tensor(idx, val, (num_vertices, num_vertices), check_invariants=False).coalesce()
