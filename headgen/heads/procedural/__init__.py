"""Procedural generator of the built-in head (see :mod:`headgen.heads.builtin` for the model).

``generate(resolution)`` is deterministic: the implicit anatomy (:mod:`.anatomy`) is sampled by
rays (:mod:`.mesh`), then landmarks (:mod:`.landmarks`), regions (:mod:`.regions`), the identity
basis (:mod:`.identity`) and the expressions (:mod:`.expressions`) are computed on the mesh, and
everything is mapped to the normalized frame (chin to crown = 1, y = 0 halfway).
"""

from __future__ import annotations

import numpy as np

from headgen.heads.base import HeadModel
from headgen.heads.procedural import anatomy as A
from headgen.heads.procedural.expressions import EXPRESSION_NAMES, expression_fields
from headgen.heads.procedural.identity import identity_basis
from headgen.heads.procedural.landmarks import FACE_OVAL, landmark_targets
from headgen.heads.procedural.mesh import build_grid_surface, march, smooth_normals
from headgen.heads.procedural.regions import region_masks

GENERATOR_VERSION = 1
"""Bump when the generated head changes on purpose (cached files also track the source, below)."""


def generator_fingerprint() -> str:
    """Short hash of the generator's source: a cached head made by other code is rebuilt."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256(str(GENERATOR_VERSION).encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]

RESOLUTIONS: dict[str, dict[str, int]] = {
    "default": {"rings": 100, "segments": 108, "refine_levels": 1, "relax_iterations": 5},
    "low": {"rings": 56, "segments": 60, "refine_levels": 0, "relax_iterations": 3},
}


def frontal_depth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth of the head surface seen from the front (+z) at ``(x, y)`` (points inside the head)."""
    origin = np.stack([x, y, np.full_like(x, 0.1)], -1)
    if np.any(A.head_sdf(origin) >= 0):
        raise ValueError("frontal_depth: a point is not in front of the head")
    dirs = np.tile([0.0, 0.0, 1.0], (len(x), 1))
    return 0.1 + march(A.head_sdf, origin, dirs, t_max=0.8)


def generate(resolution: str = "default", seed: int = 7) -> HeadModel:
    """Build the built-in head model (a few seconds)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}; choose one of {sorted(RESOLUTIONS)}")
    opts = RESOLUTIONS[resolution]
    surf = build_grid_surface(
        A.head_sdf, A.RAY_CENTER, opts["rings"], opts["segments"],
        relax_iterations=opts["relax_iterations"], refine=A.detail_region,
        refine_levels=opts["refine_levels"],
        pin=A.pinned_region,
    )
    v, faces = surf.vertices, surf.faces
    normals = smooth_normals(v, faces)  # displacement directions must not jump at creases

    ids, targets = landmark_targets(frontal_depth)
    lm_faces, lm_bary = surf.locate(targets)
    lm_pos = np.einsum("lkc,lk->lc", v[faces[lm_faces]], lm_bary)
    oval = lm_pos[[list(ids).index(i) for i in FACE_OVAL]]
    regions = region_masks(v, oval, surf.center)

    basis, _ = identity_basis(v, normals, seed=seed)
    expr = expression_fields(v, normals)
    expr_basis = np.stack([expr[n] for n in EXPRESSION_NAMES])

    chin_y = float(lm_pos[list(ids).index(152), 1])
    crown_y = float(v[:, 1].max())
    height = crown_y - chin_y
    offset = np.array([0.0, -0.5 * (crown_y + chin_y), 0.0])
    model = HeadModel(
        name=f"builtin-{resolution}",
        v_template=v,
        faces=faces,
        identity_basis=basis,
        expression_basis=expr_basis,
        expression_names=list(EXPRESSION_NAMES),
        landmark_faces=lm_faces,
        landmark_bary=lm_bary,
        landmark_ids=ids,
        uvs=surf.uvs,
        uv_faces=surf.uv_faces,
        regions=regions,
        scale=height,
        units="design units",
        meta={"generator_version": GENERATOR_VERSION, "generator": generator_fingerprint(),
              "resolution": resolution, "seed": seed},
    )
    out = model.transformed(1.0 / height, offset)
    out.scale = 1.0
    out.units = "head height"
    # The ray centre in the final frame: the mesh is star-shaped around it (used by checks).
    center = (A.RAY_CENTER + offset) / height
    out.meta = {k: v for k, v in out.meta.items() if k != "normalization"}
    out.meta.update({f"center_{k}": float(c) for k, c in zip("xyz", center)})
    return out
