"""UV unwrapping of any triangle mesh and baking fields into UV textures.

:func:`unwrap` cuts the mesh into charts (by facing direction, :mod:`headgen.geometry.charts`, or
xatlas's) and packs them into ``[0, 1]^2`` with ``xatlas``; the result is a
:class:`~headgen.geometry.mesh.Mesh` whose UVs are indexed separately (``t_tex_idx``), so positions
stay shared (the mesh stays watertight) while UVs split at seams.

:func:`bake_field` / :func:`bake_vertex_attribute` fill a texture by rasterising the UV layout:
every UV vertex is drawn at clip position ``(2u - 1, 2v - 1, 0, 1)``, so texel row 0 (the top of
the image) is ``v = 1``, as :mod:`headgen.geometry.mesh` requires. The rasteriser interpolates the
3D position (or the attribute) at each covered texel; a field is then evaluated there. Empty
texels next to charts are filled from their covered neighbours (``padding`` rings), so bilinear
lookups near seams do not bleed in the background.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headgen.errors import HeadgenError
from headgen.geometry.charts import normal_charts, overlapping_charts
from headgen.geometry.mesh import Mesh

UnwrapMethod = Literal["normal-charts", "xatlas"]
"""How :func:`unwrap` cuts charts; the type of the representations' ``export_unwrap``."""
UNWRAP_METHODS: tuple[str, ...] = get_args(UnwrapMethod)


def unwrap(mesh: Mesh, texture_size: int = 1024, padding: int = 2, method: str = "normal-charts") -> Mesh:
    """The same surface with UVs (``v_tex`` [T,2], ``t_tex_idx`` [F,3]); faces keep their order.

    ``method``:

    * ``normal-charts`` (default): charts by the direction faces face, projected flat
      (:mod:`headgen.geometry.charts`), folded charts cut until they lie flat, packed by xatlas.
      HeadArtist's grid-128 DMTet of the ICT head (271k faces): 5.1 s, 59% of a 1024 px atlas
      covered, a baked pattern read back at 39.4 dB (``benchmarks/bench_unwrap.py``).
    * ``xatlas``: xatlas charts the whole mesh, at about 2.5-3.5k faces a second on a 2-core CPU
      (the same head: 113 s, 38% covered, 35.5 dB; a 201k-face dry-run surface: 56-66 s); its chart
      options trade little of that (max_cost 4: 117 s; splitting the mesh in 2 or 4 parts: 41-50 s
      for 201k faces).

    ``texture_size`` and ``padding`` (texels between charts) guide the packing.
    """
    if mesh.num_faces == 0:
        raise HeadgenError("unwrap: the mesh has no faces")
    if method not in UNWRAP_METHODS:
        raise HeadgenError(f"unwrap: unknown method '{method}'; use one of {', '.join(UNWRAP_METHODS)}")
    if method == "xatlas":
        atlas = _xatlas()
        tri = mesh.t_pos_idx.detach().cpu().numpy().astype(np.uint32)
        atlas.add_mesh(mesh.v_pos.detach().cpu().float().numpy(), tri)
        return _with_atlas_uvs(mesh, atlas, _pack_options(texture_size, padding), mesh.t_pos_idx)
    uv_vertices, uv_faces = _normal_chart_layout(mesh)
    corner_pos = torch.zeros(len(uv_vertices), 3)
    corner_pos[uv_faces.reshape(-1)] = mesh.v_pos.detach().cpu().float()[mesh.t_pos_idx.cpu().long().reshape(-1)]
    atlas = _xatlas()
    # xatlas packs the given charts (use_input_mesh_uvs); as a bare UV mesh (add_uv_mesh) it merged
    # neighbouring charts into overlapping ones. Unrotated charts pack tighter here (atlas 1144 vs
    # 1173 texels wide for a 1024 request, the 201k-face head).
    atlas.add_mesh(corner_pos.numpy(), uv_faces.numpy().astype(np.uint32), None, uv_vertices.float().numpy())
    pack = _pack_options(texture_size, padding)
    pack.rotate_charts = False
    return _with_atlas_uvs(mesh, atlas, pack, uv_faces, use_input_uvs=True)


def _xatlas():
    import xatlas

    return xatlas.Atlas()


def _pack_options(texture_size: int, padding: int):
    import xatlas

    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    return pack


def _with_atlas_uvs(mesh: Mesh, atlas, pack, expect: Tensor, use_input_uvs: bool = False) -> Mesh:
    """``mesh`` with the packed UVs of the atlas's only mesh, whose faces must be ``expect``'s, in order."""
    import xatlas

    charts = xatlas.ChartOptions()
    charts.use_input_mesh_uvs = use_input_uvs
    atlas.generate(charts, pack)
    vmapping, indices, uvs = atlas[0]
    mapped = torch.as_tensor(vmapping.astype(np.int64))[torch.as_tensor(indices.astype(np.int64))]
    if not torch.equal(mapped, expect.detach().cpu().long()):
        raise HeadgenError("unwrap: xatlas reordered the faces; this xatlas version is not supported")
    dev = mesh.v_pos.device
    return Mesh(
        mesh.v_pos,
        mesh.t_pos_idx,
        v_tex=torch.as_tensor(uvs, dtype=torch.float32, device=dev),
        t_tex_idx=torch.as_tensor(indices.astype(np.int64), device=dev),
    )


def _normal_chart_layout(mesh: Mesh, max_splits: int = 16) -> tuple[Tensor, Tensor]:
    """(UV vertices [T,2] in scene units, UV faces [F,3]): normal charts, each with vertices of its own.

    A chart that folds over itself is cut in two across its longest side, as often as it takes
    (``max_splits`` rounds): that separates the layers of a fold (an ear before the scalp, a spiral
    ramp) where flattening it whole cannot; xatlas's own charting does not (its LSCM chart of a
    1.5-turn spiral ramp covers itself)."""
    faces = mesh.t_pos_idx.detach().cpu().long()
    chart, uv = normal_charts(mesh.v_pos, faces)
    centre = mesh.v_pos.detach().cpu().double()[faces].mean(1)
    for _ in range(max_splits):
        folded = overlapping_charts(uv, chart, faces).nonzero().flatten()
        if len(folded) == 0:
            break
        fresh = int(chart.max()) + 1
        for c in folded.tolist():
            members = (chart == c).nonzero().flatten()
            pts = centre[members]
            axis = int((pts.amax(0) - pts.amin(0)).argmax())
            upper = pts[:, axis] > pts[:, axis].median()
            chart[members[upper]] = fresh
            fresh += 1
    # A UV vertex per (chart, mesh vertex): charts share no UV vertex, so xatlas packs each alone.
    key = chart[:, None] * mesh.num_vertices + faces
    unique, uv_faces = torch.unique(key.reshape(-1), return_inverse=True)
    uv_faces = uv_faces.view(-1, 3)
    # Charts side by side: xatlas joins faces whose corners meet in UV and in 3D, which the two
    # halves of a cut chart would (same plane, shared edge).
    span = float((uv.amax((0, 1)) - uv.amin((0, 1))).max()) + 1.0
    uv = uv + torch.stack([chart.double() * span, torch.zeros(len(chart), dtype=torch.float64)], -1)[:, None]
    uv_vertices = torch.zeros(len(unique), 2, dtype=torch.float64)
    uv_vertices[uv_faces.reshape(-1)] = uv.reshape(-1, 2)
    return uv_vertices, uv_faces


def _rasterize_uv(mesh: Mesh, size: int, attr: Tensor) -> tuple[Tensor, Tensor]:
    """Interpolate per-UV-vertex ``attr`` [T,C] over the UV layout: (values [size,size,C], mask)."""
    from headgen.render.raster import get_backend

    if mesh.v_tex is None:
        raise HeadgenError(
            "baking a texture needs a mesh with UVs; call headgen.geometry.unwrap.unwrap first"
        )
    dev = attr.device
    uv = mesh.v_tex.to(dev).float()
    clip = torch.cat([uv * 2.0 - 1.0, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=-1)
    tri = mesh.uv_idx.to(dev).int()
    backend = get_backend("auto", dev)
    rast, _ = backend.rasterize(clip[None], tri, (size, size))
    values = backend.interpolate(attr[None], rast, tri)[0]
    mask = rast[0, ..., 3] > 0
    return values, mask


def _uv_positions(mesh: Mesh) -> Tensor:
    """[T,3] the 3D position of every UV vertex."""
    assert mesh.v_tex is not None
    out = mesh.v_pos.new_zeros(mesh.v_tex.shape[0], 3)
    out[mesh.uv_idx.reshape(-1).long()] = mesh.v_pos[mesh.t_pos_idx.reshape(-1).long()]
    return out


def dilate(values: Tensor, mask: Tensor, rings: int) -> Tensor:
    """Fill up to ``rings`` texels around the covered ``mask`` [h,w] with neighbour averages."""
    v = values.permute(2, 0, 1)[None] * mask[None, None]
    m = mask[None, None].to(values.dtype)
    kernel = torch.ones(1, 1, 3, 3, dtype=values.dtype, device=values.device)
    for _ in range(rings):
        count = F.conv2d(m, kernel, padding=1)
        total = F.conv2d(v.reshape(-1, 1, *v.shape[-2:]), kernel, padding=1).reshape(v.shape)
        grow = (count > 0) & (m == 0)
        v = torch.where(grow, total / count.clamp_min(1), v)
        m = torch.where(grow, torch.ones_like(m), m)
    return v[0].permute(1, 2, 0)


@torch.no_grad()
def bake_field(
    mesh: Mesh,
    field: Callable[[Tensor], Tensor],
    size: int = 1024,
    padding: int = 4,
    background: float = 0.0,
    chunk: int = 262144,
) -> Tensor:
    """Texture [size,size,C] holding ``field(points [N,3]) -> [N,C]`` at each texel's 3D point."""
    pos, mask = _rasterize_uv(mesh, size, _uv_positions(mesh).float())
    pts = pos[mask]
    vals = torch.cat([field(c) for c in pts.split(chunk)], dim=0) if len(pts) else pos.new_zeros(0, 3)
    out = pos.new_full((size, size, vals.shape[-1]), float(background))
    out[mask] = vals.to(out.dtype)
    return _finish(out, mask, padding, background)


@torch.no_grad()
def bake_vertex_attribute(
    mesh: Mesh, attr: Tensor, size: int = 1024, padding: int = 4, background: float = 0.0
) -> Tensor:
    """Texture [size,size,C] interpolating the per-position-vertex ``attr`` [V,C] over the UV layout."""
    if attr.shape[0] != mesh.num_vertices:
        raise HeadgenError(
            f"bake_vertex_attribute: attr has {attr.shape[0]} rows for {mesh.num_vertices} vertices"
        )
    assert mesh.v_tex is not None
    per_uv = attr.new_zeros(mesh.v_tex.shape[0], attr.shape[-1])
    per_uv[mesh.uv_idx.reshape(-1).long()] = attr[mesh.t_pos_idx.reshape(-1).long()]
    values, mask = _rasterize_uv(mesh, size, per_uv.float())
    values = torch.where(mask[..., None], values, torch.full_like(values, float(background)))
    return _finish(values, mask, padding, background)


def _finish(values: Tensor, mask: Tensor, padding: int, background: float) -> Tensor:
    if padding > 0:
        filled = dilate(values, mask, padding)
        grown = dilate(mask[..., None].float(), mask, padding)[..., 0] > 0
        values = torch.where(grown[..., None], filled, torch.full_like(values, float(background)))
    return values


def textured_mesh(
    mesh: Mesh, color: Callable[[Tensor], Tensor], texture_size: int = 1024, padding: int = 4,
    method: str = "normal-charts",
) -> tuple[Mesh, Tensor]:
    """Unwrap ``mesh`` (:func:`unwrap`'s ``method``) and bake the colour field into an albedo map:
    (mesh with UVs, [h,w,3] in [0,1])."""
    uv_mesh = unwrap(mesh.to("cpu") if mesh.v_pos.device.type != "cpu" else mesh, texture_size, method=method)
    uv_mesh = uv_mesh.to(mesh.v_pos.device)
    tex = bake_field(uv_mesh, color, texture_size, padding).clamp(0.0, 1.0)
    return uv_mesh, tex


__all__ = ["UNWRAP_METHODS", "bake_field", "bake_vertex_attribute", "dilate", "textured_mesh", "unwrap"]
