"""UV unwrapping by normal charts (headgen/geometry/charts.py): coverage, no overlaps, even texel
density, folded charts handed to xatlas."""

from __future__ import annotations

import math

import pytest
import torch

from headgen.errors import HeadgenError
from headgen.geometry.charts import directions, fold_cells, normal_charts, overlapping_charts
from headgen.geometry.mesh import Mesh
from headgen.geometry.unwrap import unwrap
from headgen.heads import load_builtin_head


def corner_uvs(mesh: Mesh) -> torch.Tensor:
    return mesh.v_tex.double()[mesh.t_tex_idx]


def uv_area(uv: torch.Tensor) -> torch.Tensor:
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def area_3d(mesh: Mesh) -> torch.Tensor:
    p = mesh.v_pos.double()[mesh.t_pos_idx]
    return 0.5 * torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]).norm(dim=1)


def overlaps(mesh: Mesh) -> bool:
    """Whether two faces of the packed layout (the whole atlas as one chart, on a 2M-cell grid) cover
    more than 1 cell in 10,000: xatlas's own charts of a fold keep a few cells where slivers cross."""
    uv = corner_uvs(mesh)
    cells = int(fold_cells(uv, torch.zeros(len(uv), dtype=torch.long), mesh.t_pos_idx)[0])
    return cells > 1e-4 * 2.0e6 * float(uv_area(uv).abs().sum())


def ramp(turns: float = 1.5, steps: int = 90, rings: int = 4) -> Mesh:
    """A spiral ramp (annulus 0.5-1 wide, rising 0.2 a turn): every face looks up, and its projection
    along +y covers itself after one turn."""
    a = torch.linspace(0, 2 * math.pi * turns, steps + 1, dtype=torch.float64)
    r = torch.linspace(0.5, 1.0, rings + 1, dtype=torch.float64)
    aa, rr = torch.meshgrid(a, r, indexing="ij")
    v = torch.stack([rr * torch.cos(aa), 0.2 * aa / (2 * math.pi), -rr * torch.sin(aa)], -1).reshape(-1, 3)
    idx = torch.arange(len(v)).view(steps + 1, rings + 1)
    q = torch.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    faces = torch.cat([q[:, [0, 2, 1]], q[:, [0, 3, 2]]])
    return Mesh(v.float(), faces)


def test_every_normal_is_within_28_degrees_of_a_direction():
    v = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=1)
    worst = math.degrees(math.acos(float((v @ directions().T).max(1).values.min())))
    assert 25.0 < worst < 27.7  # the cube's 26 directions: 27.6 degrees at most


def test_the_builtin_head_unwraps_into_few_even_non_overlapping_charts():
    head = load_builtin_head()
    mesh = Mesh(head.v_template.float(), head.faces.long())
    chart, _ = normal_charts(mesh.v_pos, mesh.t_pos_idx)
    out = unwrap(mesh, 512)
    assert torch.equal(out.t_pos_idx, mesh.t_pos_idx) and out.t_tex_idx.shape == mesh.t_pos_idx.shape
    assert float(out.v_tex.min()) >= 0.0 and float(out.v_tex.max()) <= 1.0
    assert not overlaps(out)
    # Few charts, and texel density even over the surface: UV area / 3D area within a few percent of
    # the median for most faces (projection shrinks a face by cos of its angle to its direction).
    assert int(chart.max()) + 1 < mesh.num_faces / 40
    a3 = area_3d(mesh)
    big = a3 > 0.1 * a3.median()
    ratio = uv_area(corner_uvs(out)).abs()[big] / a3[big]
    ratio = ratio / ratio.median()
    assert float(ratio.quantile(0.02)) > 0.7 and float(ratio.quantile(0.98)) < 1.2, ratio.quantile(
        torch.tensor([0.02, 0.98], dtype=ratio.dtype))
    # every packed chart keeps one orientation (a mirrored chart is fine; a fold within one is not)
    assert float(uv_area(corner_uvs(out)).abs().sum()) > 0.3  # the atlas is used


def test_a_chart_that_folds_over_itself_is_cut_until_it_lies_flat():
    mesh = ramp()
    chart, uv = normal_charts(mesh.v_pos, mesh.t_pos_idx)
    assert int(chart.max()) == 0  # one direction (up), one connected chart
    assert bool(overlapping_charts(uv, chart, mesh.t_pos_idx)[0])  # its projection covers itself
    flat = ramp(turns=0.75)
    chart, uv = normal_charts(flat.v_pos, flat.t_pos_idx)
    assert not bool(overlapping_charts(uv, chart, flat.t_pos_idx).any())  # under one turn: no fold
    out = unwrap(mesh, 256)
    assert not overlaps(out) and float(out.v_tex.min()) >= 0.0 and float(out.v_tex.max()) <= 1.0
    assert overlaps(unwrap(mesh, 256, method="xatlas"))  # xatlas's conformal chart of the ramp covers itself


def test_unknown_method_is_refused():
    with pytest.raises(HeadgenError, match="unknown method 'smart'.*normal-charts, xatlas"):
        unwrap(ramp(), method="smart")
