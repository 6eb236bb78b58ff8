"""Each finished stage's result as a surface and a small front render, for the viewer's stage tab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from headgen.errors import HeadgenError

PREVIEW_SIZE = 256


def stage_surface(root: Path, stage: str) -> Any:
    """The surface a finished stage saved (``stages/<stage>/result.*``), on the CPU."""
    import torch

    from headgen.context import RunContext
    from headgen.export.obj import export_surface
    from headgen.pipeline import open_run
    from headgen.prior.choice import PriorChoice
    from headgen.rundir import RunDir
    from headgen.stages.results import load_result

    run_dir = RunDir.open(root, "view")
    cfg, plain, state = open_run(run_dir, "view")  # checked as --export checks it
    summary = run_dir.read_summary()
    ctx = RunContext(cfg, plain, run_dir, torch.device("cpu"), run_id=state["run_id"])
    ctx.chosen_prior = PriorChoice(mode=str(summary.get("prior", cfg.prior)))
    rep = load_result(root / "stages" / stage, ctx, ctx.stamp(stage))
    with torch.no_grad():
        return export_surface(rep).to("cpu")


def stage_preview(surface: Any, size: int = PREVIEW_SIZE) -> np.ndarray:
    """[size,size,3] uint8: the surface from the front, textured when it has colour, else shaded."""
    from headgen.export.preview import orbit_cameras, render_views

    mode = "rgb" if surface.albedo_map is not None or surface.v_color is not None else "shading"
    return render_views(surface, orbit_cameras([0.0], 5.0, 3.0, 30.0, size), mode, size)[0]


def surface_arrays(surface: Any) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V,3] float32, faces [F,3] uint32) of a surface and its drawn parts, as one mesh."""
    meshes = [surface.mesh] + [p.mesh for p in getattr(surface, "parts", []) if getattr(p, "alpha", 1.0) >= 1.0]
    verts, faces, n = [], [], 0
    for mesh in meshes:
        v = mesh.v_pos.detach().float().cpu().numpy()
        verts.append(v)
        faces.append(mesh.t_pos_idx.detach().cpu().numpy().astype(np.uint32) + n)
        n += len(v)
    if n == 0:
        raise HeadgenError("the stage's surface is empty")
    return np.concatenate(verts).astype(np.float32), np.concatenate(faces)
