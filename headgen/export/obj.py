"""Wavefront OBJ + MTL + texture PNGs, readable by Blender, Maya and trimesh.

OBJ indexes positions and UVs separately, so UV seams are written as they are (no vertex
splitting). Textures: ``diffuse.png`` (map_Kd), ``normal.png`` (tangent space, ``norm``/``map_Bump``)
and ``specular.png`` (map_Ks) when the representation has them.

Parts of the surface (DreamFace's hair) are written beside the head as their own OBJ + MTL named
after the part (``hair.obj``, ``hair.mtl``), in the same frame, so ``head.obj`` stays one mesh
that any tool loads as such; a constant-colour part's material is its ``Kd`` (a textured part
gets ``<name>_diffuse.png``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headgen.errors import HeadgenError
from headgen.export.images import write_png
from headgen.geometry.mesh import SurfaceGeometry
from headgen.registry import register
from headgen.rundir import atomic_write_text, check_inside

if TYPE_CHECKING:
    from headgen.context import RunContext


def export_surface(representation: Any) -> SurfaceGeometry:
    """The representation as a triangle mesh with UVs and texture images."""
    fn = getattr(representation, "export_surface", None)
    if fn is None:
        raise NotImplementedError(
            f"representation {getattr(representation, 'registered_name', type(representation).__name__)} "
            "does not implement export_surface()"
        )
    return fn()


def obj_text(surface: SurfaceGeometry, mtl_name: str | None, material: str = "head") -> str:
    mesh = surface.mesh
    v = mesh.v_pos.detach().cpu().double().numpy()
    n = mesh.vertex_normals().detach().cpu().double().numpy()
    f = mesh.t_pos_idx.cpu().numpy() + 1
    buf = io.StringIO()
    buf.write("# headgen export\n")
    if mtl_name:
        buf.write(f"mtllib {mtl_name}\n")
    np.savetxt(buf, v, fmt="v %.6f %.6f %.6f")
    np.savetxt(buf, n, fmt="vn %.5f %.5f %.5f")
    if mesh.v_tex is not None:
        vt = mesh.v_tex.detach().cpu().double().numpy()
        np.savetxt(buf, vt, fmt="vt %.6f %.6f")
        ft = mesh.uv_idx.cpu().numpy() + 1
        if mtl_name:
            buf.write(f"usemtl {material}\n")
        rows = np.stack([f[:, 0], ft[:, 0], f[:, 0], f[:, 1], ft[:, 1], f[:, 1], f[:, 2], ft[:, 2], f[:, 2]], 1)
        np.savetxt(buf, rows, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    else:
        if mtl_name:
            buf.write(f"usemtl {material}\n")
        rows = np.stack([f[:, 0], f[:, 0], f[:, 1], f[:, 1], f[:, 2], f[:, 2]], 1)
        np.savetxt(buf, rows, fmt="f %d//%d %d//%d %d//%d")
    return buf.getvalue()


def part_name(part: SurfaceGeometry, index: int) -> str:
    """A file-safe name for a surface part ("hair"; ``part<i>`` when it has none)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", part.name).strip("_")
    return name or f"part{index}"


def _material_colour(part: SurfaceGeometry) -> tuple[float, float, float]:
    if part.base_color is not None:
        return tuple(float(c) for c in part.base_color.detach().cpu().clamp(0, 1).tolist())  # type: ignore[return-value]
    if part.v_color is not None:  # OBJ has no per-vertex colour in MTL: the mean stands in
        return tuple(float(c) for c in part.v_color.detach().cpu().float().mean(0).clamp(0, 1).tolist())  # type: ignore[return-value]
    return (0.8, 0.8, 0.8)


def write_part(part: SurfaceGeometry, name: str, assets: Path) -> dict[str, str]:
    """``<name>.obj`` + ``<name>.mtl`` (+ ``<name>_diffuse.png``) of one surface part."""
    written: dict[str, str] = {}
    kd = " ".join(f"{c:.4f}" for c in _material_colour(part))
    lines = [f"newmtl {name}", "Ka 0 0 0", f"Kd {kd}", "Ks 0.04 0.04 0.04", "Ns 32", "illum 2"]
    if part.albedo_map is not None:
        if part.mesh.v_tex is None:
            raise HeadgenError(f"exporter obj: the diffuse map of part {name!r} needs UVs but its mesh has none")
        path = write_png(assets / f"{name}_diffuse.png", part.albedo_map)
        written[f"{name}_diffuse_map"] = str(path)
        lines = [line if not line.startswith("Kd") else "Kd 1 1 1" for line in lines] + [f"map_Kd {path.name}"]
    mtl = atomic_write_text(assets / f"{name}.mtl", "\n".join(lines) + "\n")
    obj = atomic_write_text(assets / f"{name}.obj", obj_text(part, mtl.name, material=name))
    written[f"{name}_obj"] = str(obj)
    written[f"{name}_mtl"] = str(mtl)
    return written


@register("exporter", "obj")
class ObjExporter:
    """OBJ mesh with UVs, an MTL material and diffuse / normal / specular texture PNGs (hair: hair.obj beside it)."""

    @dataclass
    class Config:
        filename: str = "head.obj"
        """Name of the OBJ file in assets/ (the MTL takes the same stem); parts such as the hair are
        written beside it as <part>.obj / <part>.mtl."""

        def __post_init__(self) -> None:  # at validation, before any stage runs
            check_inside(self.filename, "exporter obj: filename")

    def __init__(self, cfg: Config):
        if not cfg.filename.endswith(".obj"):
            raise HeadgenError(f"exporter obj: filename must end with .obj, got {cfg.filename!r}")
        self.cfg = cfg

    def export(self, representation: Any, ctx: RunContext, assets: Path) -> dict[str, str]:
        surface = export_surface(representation)
        written: dict[str, str] = {}
        maps = {
            "diffuse": surface.albedo_map,
            "normal": surface.normal_map,
            "specular": getattr(surface, "specular_map", None),
        }
        lines = ["newmtl head", "Ka 0 0 0", "Kd 1 1 1", "Ks 0.04 0.04 0.04", "Ns 32", "illum 2"]
        keys = {"diffuse": ["map_Kd"], "normal": ["norm", "map_Bump -bm 1"], "specular": ["map_Ks"]}
        for name, image in maps.items():
            if image is None:
                continue
            if surface.mesh.v_tex is None:
                raise HeadgenError(f"exporter obj: the {name} map needs UVs but the mesh has none")
            path = write_png(assets / f"{name}.png", image)
            written[f"{name}_map"] = str(path)
            lines += [f"{key} {path.name}" for key in keys[name]]
        stem = Path(self.cfg.filename).stem
        mtl = assets / f"{stem}.mtl"
        atomic_write_text(mtl, "\n".join(lines) + "\n")
        obj = atomic_write_text(assets / self.cfg.filename, obj_text(surface, mtl.name))
        written["obj"] = str(obj)
        written["mtl"] = str(mtl)
        names = [part_name(part, i) for i, part in enumerate(surface.parts)]
        for i, (part, name) in enumerate(zip(surface.parts, names)):
            if name == stem or name in names[:i]:
                raise HeadgenError(f"exporter obj: surface part {i} would be written as {name}.obj, which is "
                                   "taken; give the parts distinct names other than the OBJ's")
            written.update(write_part(part, name, assets))
        return written
