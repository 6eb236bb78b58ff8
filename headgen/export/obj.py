"""Wavefront OBJ + MTL + texture PNGs, readable by Blender, Maya and trimesh.

OBJ indexes positions and UVs separately, so UV seams are written as they are (no vertex
splitting). Textures: ``diffuse.png`` (map_Kd), ``normal.png`` (tangent space, ``norm``/``map_Bump``)
and ``specular.png`` (map_Ks) when the representation has them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headgen.errors import HeadgenError
from headgen.export.images import write_png
from headgen.geometry.mesh import SurfaceGeometry
from headgen.registry import register
from headgen.rundir import atomic_write_text


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
        rows = np.stack([f[:, 0], f[:, 0], f[:, 1], f[:, 1], f[:, 2], f[:, 2]], 1)
        np.savetxt(buf, rows, fmt="f %d//%d %d//%d %d//%d")
    return buf.getvalue()


@register("exporter", "obj")
class ObjExporter:
    """OBJ mesh with UVs, an MTL material and diffuse / normal / specular texture PNGs."""

    @dataclass
    class Config:
        filename: str = "head.obj"
        """Name of the OBJ file in assets/ (the MTL takes the same stem)."""

    def __init__(self, cfg: Config):
        if not cfg.filename.endswith(".obj"):
            raise HeadgenError(f"exporter obj: filename must end with .obj, got {cfg.filename!r}")
        self.cfg = cfg

    def export(self, representation: Any, ctx: Any, assets: Path) -> dict[str, str]:
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
        return written
