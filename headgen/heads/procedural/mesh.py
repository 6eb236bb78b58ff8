"""From an implicit head to a closed mesh: a latitude/longitude grid of rays from one centre.

Every vertex is where a ray from :data:`~headgen.heads.procedural.anatomy.RAY_CENTER` leaves the
surface for the last time (sphere-traced from outside), so the mesh is the boundary of a
star-shaped solid: closed, genus 0 and free of self-intersections by construction. Latitude
(``psi``, from -90 at the neck cap to +90 at the crown) and longitude (``phi``, 0 = front, +90 =
the subject's left) levels are spaced by arc length of the surface, with extra density on the
face, so steep parts (nose underside, throat, ear backs) still get enough vertices.

Then, keeping that guarantee (every change must leave all triangles counter-clockwise on the
sphere of directions): feature regions are refined (edge midpoints put back on the surface),
vertices are relaxed along the surface to even out the sampling, and sliver triangles are
removed by edge flips.

UVs: ``u`` follows longitude with one seam at the back of the head (phi = +-180), ``v`` follows
latitude; the two poles (crown, centre of the neck cap) get one UV per fan triangle. UV
triangles are kept counter-clockwise as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from headgen.heads.procedural.sdf import smoothstep

SDF = Callable[[np.ndarray], np.ndarray]


def directions(psi_deg: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
    """Unit ray directions for latitudes/longitudes in degrees (broadcast together)."""
    psi = np.deg2rad(psi_deg)
    phi = np.deg2rad(phi_deg)
    c = np.cos(psi)
    return np.stack(np.broadcast_arrays(c * np.sin(phi), np.sin(psi), c * np.cos(phi)), axis=-1)


def angles(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude/longitude (degrees) of directions ``d [...,3]`` (not necessarily unit)."""
    psi = np.rad2deg(np.arctan2(d[..., 1], np.hypot(d[..., 0], d[..., 2])))
    phi = np.rad2deg(np.arctan2(d[..., 0], d[..., 2]))
    return psi, phi


def march(sdf: SDF, center: np.ndarray, dirs: np.ndarray, t_max: float = 1.25, eps: float = 2e-6,
          safety: float = 0.75, max_steps: int = 120, fallback_step: float = 0.002) -> np.ndarray:
    """Distance from ``center`` ([3] or [N,3]) along unit ``dirs [N,3]`` to the outermost crossing.

    Sphere tracing from outside; the few rays that crawl along a grazing surface finish with
    fixed steps and bisection.
    """
    center = np.broadcast_to(np.asarray(center, dtype=float), dirs.shape)
    t = np.full(len(dirs), t_max)
    prev = t.copy()  # last position known to be outside
    active = np.arange(len(dirs))
    overshot = np.zeros(len(dirs), dtype=bool)
    for _ in range(max_steps):
        f = sdf(center[active] + t[active, None] * dirs[active])
        if np.any(f[t[active] >= t_max] <= 0):
            raise RuntimeError("head generator: a ray starts inside the surface; increase t_max")
        # The field is only a distance estimate: a step may land inside; bisect those below.
        overshot[active[f < -eps]] = True
        keep = f > eps
        prev[active[keep]] = t[active[keep]]
        t[active] -= np.where(keep, np.maximum(f * safety, eps * 0.5), 0.0)
        active = active[keep]
        if active.size == 0:
            break
    hi = np.concatenate([t[active], prev[overshot]])  # outside
    lo = np.concatenate([t[active], t[overshot]])
    active = np.concatenate([active, np.nonzero(overshot)[0]])
    if active.size == 0:
        return t
    todo = np.arange(len(active) - int(overshot.sum()))
    while todo.size:
        lo[todo] -= fallback_step
        if np.any(lo[todo] <= 0):
            raise RuntimeError("head generator: a ray never enters the surface")
        inside = sdf(center[active[todo]] + lo[todo, None] * dirs[active[todo]]) <= 0
        hi[todo[~inside]] = lo[todo[~inside]]
        todo = todo[~inside]
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        inside = sdf(center[active] + mid[:, None] * dirs[active]) <= 0
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    t[active] = 0.5 * (lo + hi)
    return t


def _levels(density: np.ndarray, grid: np.ndarray, n: int) -> np.ndarray:
    """``n`` levels from ``grid[0]`` to ``grid[-1]`` equally spaced in the integral of ``density``.

    ``density[k]`` is the density on the interval ``[grid[k], grid[k+1]]``.
    """
    cum = np.concatenate([[0.0], np.cumsum(density)])
    target = np.linspace(0.0, cum[-1], n)
    return np.interp(target, cum, grid)


@dataclass
class GridSurface:
    """A closed mesh whose vertices lie on rays from ``center`` (grid topology, relaxed positions)."""

    center: np.ndarray
    psi: np.ndarray
    """[R] latitudes of the initial rings (degrees, strictly between -90 and 90)."""
    phi: np.ndarray
    """[S] longitudes of the initial segments (degrees, increasing, in [-180, 180))."""
    vertices: np.ndarray
    """[V, 3]: bottom pole, R rings of S (ring-major), top pole, then refinement vertices."""
    faces: np.ndarray
    uvs: np.ndarray
    uv_faces: np.ndarray

    @property
    def rings(self) -> int:
        return len(self.psi)

    @property
    def segments(self) -> int:
        return len(self.phi)

    def locate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Triangle and barycentric coordinates where the rays from the centre through ``points``
        leave the mesh (the mesh is star-shaped around the centre, so there is one such point)."""
        return ray_hits(self.vertices, self.faces, self.center, points - self.center)


def ray_hits(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, dirs: np.ndarray,
             chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Farthest triangle hit (index, barycentric) of rays ``origin + t dirs``, t > 0 (Moller-Trumbore)."""
    a = vertices[faces[:, 0]]
    e1 = vertices[faces[:, 1]] - a
    e2 = vertices[faces[:, 2]] - a
    out_f = np.full(len(dirs), -1, dtype=np.int64)
    out_b = np.zeros((len(dirs), 3))
    origin = np.broadcast_to(np.asarray(origin, dtype=float), dirs.shape)
    for s in range(0, len(dirs), chunk):
        d = dirs[s:s + chunk, None, :]
        o = origin[s:s + chunk, None, :]
        pvec = np.cross(d, e2[None])
        det = np.einsum("fk,rfk->rf", e1, pvec)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tvec = o - a[None]
        u = np.einsum("rfk,rfk->rf", tvec, pvec) * inv
        qvec = np.cross(tvec, e1[None])
        v = np.einsum("rk,rfk->rf", d[:, 0], qvec) * inv
        t = np.einsum("fk,rfk->rf", e2, qvec) * inv
        tol = 1e-9
        hit = ok & (u >= -tol) & (v >= -tol) & (u + v <= 1 + tol) & (t > 0)
        t = np.where(hit, t, -np.inf)
        best = np.argmax(t, axis=1)
        rows = np.arange(len(best))
        found = np.isfinite(t[rows, best])
        if not np.all(found):
            raise ValueError("a ray misses the mesh")
        out_f[s:s + chunk] = best
        uu, vv = u[rows, best], v[rows, best]
        out_b[s:s + chunk] = np.stack([1 - uu - vv, uu, vv], -1)
    return out_f, np.clip(out_b, 0.0, 1.0) / np.clip(out_b, 0.0, 1.0).sum(1, keepdims=True)


def _face_weight(phi_deg: np.ndarray, width: float) -> np.ndarray:
    return smoothstep(width + 25.0, width - 5.0, np.abs(phi_deg))


def build_grid_surface(sdf: SDF, center: np.ndarray, rings: int, segments: int,
                       fine: tuple[int, int] = (241, 216), face_boost: float = 1.2,
                       relax_iterations: int = 5, refine: Callable[[np.ndarray], np.ndarray] | None = None,
                       refine_levels: int = 1, pin: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> GridSurface:
    """Sample ``sdf`` on an arc-length-adaptive latitude/longitude grid, mesh it, refine the
    triangles ``refine(centroids)`` marks (away from the seam and poles) and relax it (except the
    vertices ``pin(vertices)`` marks, e.g. along a sharp rim)."""
    center = np.asarray(center, dtype=float)
    fpsi = np.linspace(-90.0, 90.0, fine[0])
    fphi = np.linspace(-180.0, 180.0, fine[1] + 1)
    dirs = directions(fpsi[:, None], fphi[None, :])
    t = march(sdf, center, dirs.reshape(-1, 3)).reshape(dirs.shape[:2])
    P = center + t[..., None] * dirs

    w_phi = 1.0 + 2.0 * _face_weight(fphi[:-1], 70.0)
    seg = np.linalg.norm(P[1:, :-1] - P[:-1, :-1], axis=-1)  # along latitude
    dens_psi = (np.sum(w_phi * seg ** 3, axis=1) / np.sum(w_phi)) ** (1.0 / 3.0)
    mid_psi = 0.5 * (fpsi[1:] + fpsi[:-1])
    dens_psi *= 1.0 + face_boost * smoothstep(-70.0, -55.0, mid_psi) * smoothstep(55.0, 35.0, mid_psi)
    psi = _levels(dens_psi, fpsi, rings + 2)[1:-1]

    w_psi = 1.0 + 2.0 * (smoothstep(-70.0, -55.0, fpsi) * smoothstep(55.0, 35.0, fpsi))
    w_psi = w_psi * np.cos(np.deg2rad(fpsi))  # rings near the poles matter less
    seg = np.linalg.norm(P[:, 1:] - P[:, :-1], axis=-1)
    dens_phi = (np.sum(w_psi[:, None] * seg ** 3, axis=0) / np.sum(w_psi)) ** (1.0 / 3.0)
    mid_phi = 0.5 * (fphi[1:] + fphi[:-1])
    dens_phi *= 1.0 + 1.5 * face_boost * _face_weight(mid_phi, 75.0)
    phi = _levels(dens_phi, fphi, segments + 1)[:-1]

    d = directions(psi[:, None], phi[None, :]).reshape(-1, 3)
    d = np.concatenate([[[0.0, -1.0, 0.0]], d, [[0.0, 1.0, 0.0]]])
    vertices = center + march(sdf, center, d)[:, None] * d
    faces, uv_faces, uv_vertex = _topology(vertices, rings, segments)
    seam = 1 + np.arange(rings) * segments  # column j = 0 (phi = -180) stays on the seam
    if refine is not None:
        for _ in range(refine_levels):
            marked = refine(vertices[faces].mean(1))
            pole_or_seam = np.isin(faces, np.concatenate([[0, len(d) - 1], seam])).any(1)
            marked &= ~pole_or_seam
            vertices, faces, uv_faces, uv_vertex = refine_faces(sdf, center, vertices, faces, uv_faces,
                                                                uv_vertex, marked)
    pinned = np.zeros(len(vertices), dtype=bool) if pin is None else pin(vertices)
    vertices = relax(sdf, center, vertices, faces, seam, relax_iterations, pinned, levels=(psi, phi))
    fixed_uv = np.zeros(len(vertices), dtype=bool)
    fixed_uv[np.concatenate([[0, len(d) - 1], seam])] = True
    faces, uv_faces = flip_slivers(vertices, faces, uv_faces, center, fixed_uv, levels=(psi, phi))
    uvs = _uvs(vertices - center, psi, phi, rings, segments, uv_vertex)
    return GridSurface(center=center, psi=psi, phi=phi, vertices=vertices, faces=faces, uvs=uvs,
                       uv_faces=uv_faces)


def refine_faces(sdf: SDF, center: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                 uv_faces: np.ndarray, uv_vertex: np.ndarray, marked: np.ndarray):
    """Split the marked triangles 1-to-4 and their neighbours 1-to-2 or 1-to-3 (no T-junctions).

    New vertices are edge midpoints moved onto the surface along their ray from ``center``; each
    gets one new UV entry (the caller keeps refinement away from the UV seam). Returns
    ``(vertices, faces, uv_faces, uv_vertex)``.
    """
    F = len(faces)
    key = np.sort(np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1), axis=2)
    uniq, inv = np.unique(key.reshape(-1, 2), axis=0, return_inverse=True)
    inv = inv.reshape(F, 3)
    split_edge = np.zeros(len(uniq), dtype=bool)
    split_edge[inv[marked].ravel()] = True
    n_new = int(split_edge.sum())
    new_ids = np.full(len(uniq), -1, dtype=np.int64)
    new_ids[split_edge] = len(vertices) + np.arange(n_new)
    new_uv = np.full(len(uniq), -1, dtype=np.int64)
    new_uv[split_edge] = len(uv_vertex) + np.arange(n_new)
    mid = vertices[uniq[split_edge]].mean(1)
    dirs = mid - center
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    vertices = np.concatenate([vertices, center + march(sdf, center, dirs)[:, None] * dirs])
    uv_vertex = np.concatenate([uv_vertex, new_ids[split_edge]])
    mv, mu = new_ids[inv], new_uv[inv]  # [F,3] midpoint of edge (k, k+1), or -1
    count = (mv >= 0).sum(1)
    out_v, out_u = [faces[count == 0]], [uv_faces[count == 0]]
    for f_all, m_all, out in ((faces, mv, out_v), (uv_faces, mu, out_u)):
        sel = count == 3
        a, b, c = f_all[sel, 0], f_all[sel, 1], f_all[sel, 2]
        ab, bc, ca = m_all[sel, 0], m_all[sel, 1], m_all[sel, 2]
        out += [np.stack(t, -1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))]
    for n_split in (1, 2):
        sel = np.nonzero(count == n_split)[0]
        for r in range(3):
            fv, mvr = np.roll(faces[sel], -r, axis=1), np.roll(mv[sel], -r, axis=1)
            fu, mur = np.roll(uv_faces[sel], -r, axis=1), np.roll(mu[sel], -r, axis=1)
            if n_split == 1:
                ok = mvr[:, 0] >= 0  # split edge (v0, v1)
                for f, m, out in ((fv[ok], mvr[ok], out_v), (fu[ok], mur[ok], out_u)):
                    out += [np.stack([f[:, 0], m[:, 0], f[:, 2]], -1),
                            np.stack([m[:, 0], f[:, 1], f[:, 2]], -1)]
            else:
                ok = (mvr[:, 0] >= 0) & (mvr[:, 1] >= 0)  # split edges (v0, v1) and (v1, v2)
                f0, m0 = fv[ok], mvr[ok]
                d1 = np.linalg.norm(vertices[f0[:, 0]] - vertices[m0[:, 1]], axis=1)
                d2 = np.linalg.norm(vertices[m0[:, 0]] - vertices[f0[:, 2]], axis=1)
                use1 = (d1 <= d2)[:, None]
                for f, m, out in ((fv[ok], mvr[ok], out_v), (fu[ok], mur[ok], out_u)):
                    # Cut the corner at v1, then split the remaining quad along its shorter diagonal.
                    out.append(np.stack([m[:, 0], f[:, 1], m[:, 1]], -1))
                    out.append(np.where(use1, np.stack([f[:, 0], m[:, 0], m[:, 1]], -1),
                                        np.stack([f[:, 0], m[:, 0], f[:, 2]], -1)))
                    out.append(np.where(use1, np.stack([f[:, 0], m[:, 1], f[:, 2]], -1),
                                        np.stack([m[:, 0], m[:, 1], f[:, 2]], -1)))
    return (vertices, np.concatenate(out_v).astype(np.int64), np.concatenate(out_u).astype(np.int64),
            uv_vertex)


def _min_angles(v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Smallest corner angle (radians) of each triangle."""
    p = v[tris]
    out = np.full(len(tris), np.pi)
    for k in range(3):
        a = p[:, (k + 1) % 3] - p[:, k]
        b = p[:, (k + 2) % 3] - p[:, k]
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = np.einsum("fk,fk->f", a, b) / np.maximum(norms, 1e-30)
        out = np.minimum(out, np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def flip_slivers(v: np.ndarray, faces: np.ndarray, uv_faces: np.ndarray, center: np.ndarray,
                 fixed: np.ndarray, passes: int = 8, min_angle_deg: float = 15.0,
                 levels: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flip the shared edge of triangle pairs when that raises their smallest angle.

    Only triangles with an angle below ``min_angle_deg`` are considered, only edges between
    vertices not in ``fixed`` (seam and poles keep their UV layout) are flipped, and a flip must
    keep both triangles counter-clockwise on the sphere of directions from ``center`` (so the mesh
    stays the boundary of a star-shaped solid).
    """
    faces = faces.copy()
    uv_faces = uv_faces.copy()
    V = len(v)
    dirs = (v - center) / np.linalg.norm(v - center, axis=1, keepdims=True)
    thresh = np.deg2rad(min_angle_deg)
    for _ in range(passes):
        ang = _min_angles(v, faces)
        bad = np.nonzero(ang < thresh)[0]
        if bad.size == 0:
            break
        # Half-edge (face, k): from faces[f, k] to faces[f, k+1]; its twin runs the other way.
        src = faces.reshape(-1)
        dst = np.roll(faces, -1, axis=1).reshape(-1)
        key = src * V + dst
        order = np.argsort(key)
        skey = key[order]
        fi = np.repeat(bad, 3)
        k = np.tile(np.arange(3), len(bad))
        a = faces[fi, k]
        b = faces[fi, (k + 1) % 3]
        c = faces[fi, (k + 2) % 3]
        pos = np.searchsorted(skey, b * V + a)
        pos = np.minimum(pos, len(skey) - 1)
        ok = skey[pos] == b * V + a
        twin = order[pos]
        gj, m = twin // 3, twin % 3
        d = faces[gj, (m + 2) % 3]
        ok &= ~(fixed[a] | fixed[b] | fixed[c] | fixed[d]) & (gj != fi) & (c != d)
        # The new edge (c, d) must not exist already (that would make the mesh non-manifold).
        for e in (c * V + d, d * V + c):
            p_e = np.minimum(np.searchsorted(skey, e), len(skey) - 1)
            ok &= skey[p_e] != e
        new1 = np.stack([a, d, c], -1)
        new2 = np.stack([d, b, c], -1)
        ok &= _orientation_ok(dirs, new1, levels) & _orientation_ok(dirs, new2, levels)
        gain = np.minimum(_min_angles(v, new1), _min_angles(v, new2)) - np.minimum(ang[fi], ang[gj])
        ok &= gain > 1e-3
        cand = np.nonzero(ok)[0]
        if cand.size == 0:
            break
        cand = cand[np.argsort(-gain[cand], kind="stable")]
        touched = np.zeros(len(faces), dtype=bool)
        new_edges: set[tuple[int, int]] = set()
        chosen = []
        for i in cand:  # greedy, best first, each face flipped at most once per pass
            e = (int(min(c[i], d[i])), int(max(c[i], d[i])))
            if touched[fi[i]] or touched[gj[i]] or e in new_edges:
                continue
            touched[fi[i]] = touched[gj[i]] = True
            new_edges.add(e)
            chosen.append(i)
        chosen = np.array(chosen)
        f1, f2, kk, mm = fi[chosen], gj[chosen], k[chosen], m[chosen]
        ua, ub, uc = uv_faces[f1, kk], uv_faces[f1, (kk + 1) % 3], uv_faces[f1, (kk + 2) % 3]
        ud = uv_faces[f2, (mm + 2) % 3]
        faces[f1], faces[f2] = new1[chosen], new2[chosen]
        uv_faces[f1] = np.stack([ua, ud, uc], -1)
        uv_faces[f2] = np.stack([ud, ub, uc], -1)
    return faces, uv_faces


def uv_map(rel: np.ndarray, psi_levels: np.ndarray, phi_levels: np.ndarray) -> np.ndarray:
    """(u, v) of directions ``rel`` (warped so the initial grid is a regular UV grid)."""
    R, S = len(psi_levels), len(phi_levels)
    psi, phi = angles(rel)
    v = np.interp(psi, np.concatenate([[-90.0], psi_levels, [90.0]]), np.arange(R + 2) / (R + 1))
    ext = np.concatenate([phi_levels, [phi_levels[0] + 360.0]])
    phw = np.where(phi < phi_levels[0] - 1e-9, phi + 360.0, phi)
    return np.stack([np.interp(phw, ext, np.arange(S + 1) / S), v], -1)


def _uv_orientation(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed UV area of each face, with u unwrapped across the seam (u = 0 ~ u = 1)."""
    t = uv[faces].copy()
    u = t[..., 0]
    wrap = (u.max(1) - u.min(1)) > 0.5
    u[wrap] = np.where(u[wrap] < 0.5, u[wrap] + 1.0, u[wrap])
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]


def _orientation_ok(dirs: np.ndarray, faces: np.ndarray,
                    levels: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Faces counter-clockwise on the sphere of directions and (with ``levels``) in UV space.

    Pole fans are not checked in UV (their pole corner has one UV per triangle)."""
    ok = _orientation(dirs, faces) > 1e-12
    if levels is not None:
        ok &= _uv_orientation(uv_map(dirs, *levels), faces) > 0
    return ok


def _orientation(dirs: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed volume of each face's direction triangle (> 0: counter-clockwise seen from outside)."""
    d0, d1, d2 = dirs[faces[:, 0]], dirs[faces[:, 1]], dirs[faces[:, 2]]
    return np.einsum("fk,fk->f", d0, np.cross(d1, d2))


def relax(sdf: SDF, center: np.ndarray, vertices: np.ndarray, faces: np.ndarray, seam: np.ndarray,
          iterations: int, pinned: np.ndarray | None = None, step: float = 0.5,
          levels: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Even out the sampling: tangential umbrella smoothing with every vertex kept on the surface.

    Vertices move along the surface and are put back on it by their ray from ``center``; a move
    that would flip a triangle on the sphere of directions is undone, so the mesh stays the
    boundary of a star-shaped solid (embedded); with ``levels`` (the grid's psi/phi levels) a
    move that would flip a triangle in UV space is undone too.
    """
    from scipy.sparse import coo_matrix

    V = len(vertices)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(V, V)).tocsr()
    adj = ((adj + adj.T) > 0).astype(float)
    deg = np.asarray(adj.sum(1)).ravel()
    movable = np.ones(V, dtype=bool) if pinned is None else ~pinned
    movable[[0, V - 1]] = False
    v = vertices.copy()
    for _ in range(iterations):
        lap = adj @ v / deg[:, None] - v
        n = vertex_normals(v, faces)
        lap -= np.einsum("vk,vk->v", lap, n)[:, None] * n
        target = v + step * lap
        dirs = target - center
        # Seam vertices keep phi = -180 (x = 0, z < 0) so the UV seam stays a clean line.
        dirs[seam, 0] = 0.0
        dirs[seam, 2] = -np.abs(dirs[seam, 2])
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        old_dirs = (v - center) / np.linalg.norm(v - center, axis=1, keepdims=True)
        dirs[~movable] = old_dirs[~movable]
        check = faces[~np.isin(faces, [0, V - 1]).any(1)] if levels is not None else faces
        for _ in range(30):
            bad = ~_orientation_ok(dirs, check, levels)
            if not bad.any():
                break
            back = np.unique(check[bad])
            dirs[back] = old_dirs[back]
        new = center + march(sdf, center, dirs)[:, None] * dirs
        # A vertex that slid over a crease (ear rim, lid margin) lands far from where it was
        # heading: keep it where it was.
        moved = np.linalg.norm(step * lap, axis=1)
        jump = np.linalg.norm(new - target, axis=1) > 0.5 * moved + 1e-3
        for _ in range(30):
            bad = ~_orientation_ok(np.where(jump[:, None], old_dirs, dirs), check, levels)
            if not bad.any():
                break
            jump[np.unique(check[bad])] = True
        v = np.where(jump[:, None], v, new)
    return v


def vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-15)


def smooth_normals(v: np.ndarray, faces: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Vertex normals diffused over the mesh: a direction field that does not jump at creases."""
    from scipy.sparse import coo_matrix

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(v), len(v))).tocsr()
    adj = ((adj + adj.T) > 0).astype(float)
    deg = np.asarray(adj.sum(1)).ravel()[:, None]
    n = vertex_normals(v, faces)
    for _ in range(iterations):
        n = 0.5 * n + 0.5 * (adj @ n) / deg
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-15)
    return n


def _topology(vertices: np.ndarray, R: int, S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces of the ring grid with pole fans, their UV faces, and the vertex of every UV entry.

    UV entries: S for the bottom pole (one per fan triangle), R rows of S+1 (the seam column is
    duplicated: column S is column 0 at u = 1), S for the top pole.
    """
    vid = lambda i, j: 1 + i * S + np.mod(j, S)  # noqa: E731
    top = 1 + R * S
    i, j = np.meshgrid(np.arange(R - 1), np.arange(S), indexing="ij")
    v00, v01, v10, v11 = vid(i, j), vid(i, j + 1), vid(i + 1, j), vid(i + 1, j + 1)
    d1 = np.linalg.norm(vertices[v00] - vertices[v11], axis=-1)
    d2 = np.linalg.norm(vertices[v01] - vertices[v10], axis=-1)
    diag = (d1 <= d2)[..., None]
    uv_ring = lambda i, j: S + i * (S + 1) + j  # noqa: E731
    u00, u01, u10, u11 = uv_ring(i, j), uv_ring(i, j + 1), uv_ring(i + 1, j), uv_ring(i + 1, j + 1)
    tri_a = np.where(diag, np.stack([v00, v01, v11], -1), np.stack([v00, v01, v10], -1))
    tri_b = np.where(diag, np.stack([v00, v11, v10], -1), np.stack([v01, v11, v10], -1))
    uv_a = np.where(diag, np.stack([u00, u01, u11], -1), np.stack([u00, u01, u10], -1))
    uv_b = np.where(diag, np.stack([u00, u11, u10], -1), np.stack([u01, u11, u10], -1))
    quads = np.stack([tri_a, tri_b], axis=2).reshape(-1, 3)
    quad_uv = np.stack([uv_a, uv_b], axis=2).reshape(-1, 3)
    jj = np.arange(S)
    bottom = np.stack([np.zeros(S, dtype=np.int64), vid(0, jj + 1), vid(0, jj)], -1)
    bottom_uv = np.stack([jj, uv_ring(0, jj + 1), uv_ring(0, jj)], -1)
    topf = np.stack([vid(R - 1, jj), vid(R - 1, jj + 1), np.full(S, top)], -1)
    top_uv = np.stack([uv_ring(R - 1, jj), uv_ring(R - 1, jj + 1), S + R * (S + 1) + jj], -1)
    faces = np.concatenate([bottom, quads, topf]).astype(np.int64)
    uv_faces = np.concatenate([bottom_uv, quad_uv, top_uv]).astype(np.int64)
    ring_v = 1 + np.arange(R)[:, None] * S + np.arange(S + 1)[None, :] % S
    uv_vertex = np.concatenate([np.zeros(S, dtype=np.int64), ring_v.ravel(), np.full(S, top)])
    return faces, uv_faces, uv_vertex


def _uvs(rel: np.ndarray, psi_levels: np.ndarray, phi_levels: np.ndarray, R: int, S: int,
         uv_vertex: np.ndarray) -> np.ndarray:
    """UV of every entry from its vertex's ray direction, warped so the initial grid is a regular
    UV grid; the seam columns are pinned to u = 0 / 1 and the pole entries to v = 0 / 1."""
    uvs = uv_map(rel, psi_levels, phi_levels)[uv_vertex]
    jj = np.arange(S)
    uvs[:S] = np.stack([(jj + 0.5) / S, np.zeros(S)], -1)
    uvs[S + R * (S + 1):S + R * (S + 1) + S] = np.stack([(jj + 0.5) / S, np.ones(S)], -1)
    cols = S + np.arange(R)[:, None] * (S + 1) + np.array([0, S])[None, :]
    uvs[cols[:, 0], 0] = 0.0
    uvs[cols[:, 1], 0] = 1.0
    return uvs
