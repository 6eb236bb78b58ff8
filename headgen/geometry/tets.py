"""A procedural tetrahedral grid: every cube of a regular lattice split into 6 tetrahedra.

Vertices are the ``(R+1)^3`` lattice points of the cube ``[-1, 1]^3`` (``R`` = resolution), with
index ``(i * (R+1) + j) * (R+1) + k`` for the point ``(x_i, y_j, z_k)``. Each cube is split along
its main diagonal ``(0,0,0) -> (1,1,1)`` into the 6 tetrahedra of the Kuhn (Freudenthal)
triangulation, one per ordering of the axes: ``v0 = corner``, then one step along each axis in
that order. Every cube uses the same diagonal direction, so a face shared by two cubes is split
along the same diagonal from both sides and the tetrahedra form a conforming mesh (no T-junctions,
no cracks). Every tetrahedron is positively oriented: ``det[v1 - v0, v2 - v0, v3 - v0] > 0``.

Nothing large needs to be stored: the tetrahedra of any set of cubes are ``base index + fixed
offsets``, so :meth:`TetGrid.cube_tets` builds just the ones marching tetrahedra needs (those of
cubes whose corners change sign). The full ``tets`` array (``6 R^3`` rows, 300 MB of int64 at
``R = 128``) is built only if asked for. Grids are cached in memory per (resolution, device)
after the first build; building one is a few vectorised ops (well under a second at ``R = 128``),
which is faster than reading it back from disk, so there is no disk cache.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch
from torch import Tensor

from headgen.errors import HeadgenError


def _kuhn_corners() -> Tensor:
    """[6,4,3] corner offsets (0/1) of the 6 positively oriented tetrahedra of the unit cube."""
    tets = []
    for perm in itertools.permutations(range(3)):
        corner = [0, 0, 0]
        path = [tuple(corner)]
        for axis in perm:
            corner[axis] = 1
            path.append(tuple(corner))
        p = torch.tensor(path, dtype=torch.float64)
        if torch.linalg.det(p[1:] - p[0]) < 0:  # odd permutation: swap two vertices to flip it
            path[2], path[3] = path[3], path[2]
        tets.append(path)
    return torch.tensor(tets, dtype=torch.long)


KUHN_CORNERS = _kuhn_corners()


class TetGrid:
    """The Kuhn tetrahedral grid of resolution ``R`` on ``[-1, 1]^3`` (see the module docstring)."""

    def __init__(self, resolution: int, device: torch.device | str = "cpu") -> None:
        if resolution < 1:
            raise HeadgenError(f"tet grid resolution must be >= 1, got {resolution}")
        self.resolution = resolution
        self.device = torch.device(device)
        n = resolution + 1
        lin = torch.linspace(-1.0, 1.0, n, device=self.device)
        gx, gy, gz = torch.meshgrid(lin, lin, lin, indexing="ij")
        self.vertices = torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)
        """[V,3] lattice points in [-1, 1]^3."""
        c = KUHN_CORNERS.to(self.device)
        # Offsets of each tetrahedron's corners relative to its cube's base vertex, as flat indices.
        self.tet_offsets = (c[..., 0] * n + c[..., 1]) * n + c[..., 2]  # [6,4]
        self._tets: Tensor | None = None
        self._boundary: Tensor | None = None

    @property
    def num_vertices(self) -> int:
        return (self.resolution + 1) ** 3

    @property
    def num_tets(self) -> int:
        return 6 * self.resolution**3

    @property
    def cell_size(self) -> float:
        """Edge length of a cube in the [-1, 1] frame (scale by the box half-size for world units)."""
        return 2.0 / self.resolution

    def cube_base(self, cubes: Tensor) -> Tensor:
        """Flat index of the base (min) corner of each cube ``(i * R + j) * R + k``."""
        r = self.resolution
        i = torch.div(cubes, r * r, rounding_mode="floor")
        j = torch.div(cubes, r, rounding_mode="floor") % r
        k = cubes % r
        n = r + 1
        return (i * n + j) * n + k

    def cube_tets(self, cubes: Tensor) -> Tensor:
        """[6C,4] vertex indices of the tetrahedra of the cubes ``cubes`` [C] (long)."""
        base = self.cube_base(cubes.to(self.device))
        return (base[:, None, None] + self.tet_offsets[None]).reshape(-1, 4)

    @property
    def tets(self) -> Tensor:
        """[6R^3,4] all tetrahedra (long), cube-major: rows 6c..6c+5 belong to cube c."""
        if self._tets is None:
            cubes = torch.arange(self.resolution**3, device=self.device)
            self._tets = self.cube_tets(cubes)
        return self._tets

    def crossing_cubes(self, inside: Tensor) -> Tensor:
        """Indices of the cubes whose 8 corners are not all on the same side.

        ``inside`` [V] is a boolean per vertex; only tetrahedra of these cubes can cross the
        surface, since a tetrahedron's corners are corners of its cube.
        """
        n = self.resolution + 1
        occ = inside.reshape(n, n, n)
        any_in = torch.zeros(n - 1, n - 1, n - 1, dtype=torch.bool, device=occ.device)
        all_in = torch.ones_like(any_in)
        for dx, dy, dz in itertools.product((0, 1), repeat=3):
            corner = occ[dx : n - 1 + dx, dy : n - 1 + dy, dz : n - 1 + dz]
            any_in |= corner
            all_in &= corner
        return (any_in & ~all_in).reshape(-1).nonzero().squeeze(1)

    def surface_tets(self, inside: Tensor) -> Tensor:
        """[T',4] tetrahedra of the cubes that cross the surface (a superset of the crossing tets)."""
        return self.cube_tets(self.crossing_cubes(inside))

    @property
    def boundary_mask(self) -> Tensor:
        """[V] True on the faces of the cube (where a closed surface must be outside)."""
        if self._boundary is None:
            self._boundary = (self.vertices.abs() >= 1.0 - 1e-6).any(dim=-1)
        return self._boundary


@lru_cache(maxsize=8)
def _cached(resolution: int, device: str) -> TetGrid:
    return TetGrid(resolution, device)


def tet_grid(resolution: int, device: torch.device | str = "cpu") -> TetGrid:
    """The (cached) tetrahedral grid of ``resolution`` on ``device``."""
    if not isinstance(resolution, int) or resolution < 1:
        raise HeadgenError(f"tet grid resolution must be a positive integer, got {resolution!r}")
    return _cached(resolution, str(torch.device(device)))


__all__ = ["KUHN_CORNERS", "TetGrid", "tet_grid"]
