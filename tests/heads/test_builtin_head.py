"""The built-in procedural head: mesh validity, bases, expressions, landmarks, regions, UVs, API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headgen.errors import HeadgenError
from headgen.heads import BuiltinHead, HeadModel, load_builtin_head
from headgen.heads.procedural import generate
from headgen.heads.procedural.landmarks import (
    CONTOUR_IDS,
    FACE_OVAL,
    LEFT_BROW_LOWER,
    LEFT_BROW_UPPER,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LIPS_LOWER_OUTER,
    LIPS_UPPER_OUTER,
    RIGHT_BROW_LOWER,
    RIGHT_BROW_UPPER,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
)

REQUIRED_EXPRESSIONS = {
    "jawOpen", "eyeBlink_L", "eyeBlink_R", "mouthSmile_L", "mouthSmile_R", "browInnerUp", "mouthFrown_L",
    "mouthFrown_R", "mouthPucker", "mouthFunnel", "eyeWide_L", "eyeWide_R", "browDown_L", "browDown_R",
    "browOuterUp_L", "browOuterUp_R", "cheekPuff", "cheekSquint_L", "cheekSquint_R", "noseSneer_L",
    "noseSneer_R", "mouthClose", "jawLeft", "jawRight",
}


@pytest.fixture(scope="module")
def head() -> HeadModel:
    return load_builtin_head()


@pytest.fixture(scope="module")
def arrays(head):
    return head.v_template.numpy().astype(np.float64), head.faces.numpy()


def face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def star_orientation(head: HeadModel, v: np.ndarray) -> np.ndarray:
    """Signed volume of each face's direction triangle seen from the mesh centre."""
    c = np.array([head.meta["center_x"], head.meta["center_y"], head.meta["center_z"]])
    d = v - c
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    f = head.faces.numpy()
    return np.einsum("fk,fk->f", d[f[:, 0]], np.cross(d[f[:, 1]], d[f[:, 2]]))


def winding_numbers(v: np.ndarray, f: np.ndarray, points: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Generalized winding number of the closed mesh (v, f) at ``points`` (1 inside, 0 outside)."""
    out = np.empty(len(points))
    for s in range(0, len(points), chunk):
        r = v[f][None] - points[s:s + chunk, None, None, :]  # [P,F,3,3]
        n = np.linalg.norm(r, axis=-1)
        a, b, c = r[..., 0, :], r[..., 1, :], r[..., 2, :]
        det = np.einsum("pfk,pfk->pf", a, np.cross(b, c))
        den = (n[..., 0] * n[..., 1] * n[..., 2] + np.einsum("pfk,pfk->pf", a, b) * n[..., 2]
               + np.einsum("pfk,pfk->pf", a, c) * n[..., 1] + np.einsum("pfk,pfk->pf", b, c) * n[..., 0])
        out[s:s + chunk] = 2.0 * np.arctan2(det, den).sum(1) / (4 * np.pi)
    return out


def lm(head: HeadModel, ids, v=None) -> np.ndarray:
    table = head.landmarks_mediapipe(v if v is not None else head.v_template.numpy())
    return table[list(ids)]


# --- mesh ----------------------------------------------------------------------------------------
def test_mesh_is_closed_manifold_genus0_and_outward(head, arrays):
    v, f = arrays
    mesh = head.as_trimesh()
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0.3  # outward normals: positive volume (a head of height 1 holds ~0.38)
    assert mesh.euler_number == 2
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert set(counts.tolist()) == {2}
    assert len(np.unique(f)) == len(v)  # no unused vertex
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    assert area.min() > 1e-9


def test_size_and_placement(head, arrays):
    v, _ = arrays
    assert 10_000 <= head.num_vertices <= 15_500
    assert head.scale == pytest.approx(1.0)
    chin = lm(head, [152])[0]
    assert v[:, 1].max() - chin[1] == pytest.approx(1.0, abs=1e-4)
    assert v[:, 1].max() + chin[1] == pytest.approx(0.0, abs=1e-4)  # y = 0 halfway chin-crown
    assert -1.0 < v[:, 1].min() < -0.8  # the neck hangs below the chin
    assert np.abs(v[:, 0]).max() < 0.4 and -0.5 < v[:, 2].min() and v[:, 2].max() < 0.55
    pupils = lm(head, [468, 473])
    assert np.all(np.abs(pupils[:, 1]) < 0.05)  # eye level ~ y = 0
    tip = lm(head, [1])[0]
    assert tip[2] > 0.45 and tip[2] > np.percentile(v[:, 2], 99.9) - 0.03  # the nose leads the face
    # Symmetric: the mirror image of the mesh is (nearly) the mesh itself.
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    assert np.percentile(dist, 99) < 0.01


def test_generation_is_deterministic():
    a, b = generate("low"), load_builtin_head("low")  # the second comes from the cache after a first run
    for name in ("v_template", "faces", "identity_basis", "expression_basis", "landmark_faces",
                 "landmark_bary",
                 "uvs", "uv_faces"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert 3000 < a.num_vertices < 4000 and a.as_trimesh().is_watertight


def test_cached_file_round_trip(head, tmp_path):
    path = head.save_npz(tmp_path / "h.npz")
    back = HeadModel.load_npz(path)
    assert torch.equal(back.v_template, head.v_template) and torch.equal(back.faces, head.faces)
    assert torch.allclose(back.identity_basis, head.identity_basis)
    assert back.expression_names == head.expression_names
    counts = {k: int(m.sum()) for k, m in head.regions.items()}
    assert {k: int(m.sum()) for k, m in back.regions.items()} == counts
    assert back.meta["generator_version"] == head.meta["generator_version"]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(HeadgenError, match="not a head model file"):
        HeadModel.load_npz(tmp_path / "bad.npz")


# --- identity basis ------------------------------------------------------------------------------
def test_identity_basis_is_orthogonal_and_sized(head):
    S = head.identity_basis.numpy().reshape(head.num_identity, -1).astype(np.float64)
    assert head.num_identity >= 50
    G = S @ S.T
    d = np.sqrt(np.diag(G))
    corr = G / np.outer(d, d)
    assert np.abs(corr - np.eye(len(d))).max() < 1e-3
    assert np.all(np.diff(d) <= 1e-6)  # sorted by variance
    rms = np.sqrt((head.identity_basis.numpy() ** 2).sum(-1).mean(-1))
    assert 0.01 < rms[0] < 0.05  # the main mode moves the head by a few % of its height
    peak = np.sqrt((head.identity_basis.numpy() ** 2).sum(-1)).max(-1)
    assert np.all(peak > 5e-4) and peak.max() < 0.1


def test_identity_modes_are_smooth(head, arrays):
    _, f = arrays
    S = head.identity_basis.numpy().astype(np.float64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    v = arrays[0]
    edge_len = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    for k in range(head.num_identity):
        jump = np.linalg.norm(S[k][e[:, 0]] - S[k][e[:, 1]], axis=1) / edge_len
        # per sigma the displacement changes by < 1/3 per unit length: no fold even at 3 sigma
        assert jump.max() < 0.34, (k, jump.max())


def test_template_is_star_shaped_around_its_centre(head, arrays):
    # By construction (rays from one centre): the surface cannot cross itself.
    assert np.all(star_orientation(head, arrays[0]) > 0)


def test_random_identities_vary_and_stay_valid(head, arrays):
    v0, f = arrays
    n0 = face_normals(v0, f)
    rng = np.random.default_rng(1234)
    heads = []
    for i in range(20):
        beta = rng.standard_normal(head.num_identity).astype(np.float32)
        v = head.vertices(beta).astype(np.float64)
        n = face_normals(v, f)
        assert np.all((n * n0).sum(1) > 0), "a triangle flipped"
        assert head.as_trimesh(v).volume > 0.25
        if i < 2:
            # No self-intersection: points just inside / outside the surface have winding number
            # 1 / 0. Sampled where a fold would be: triangles tipped past their ray from the mesh
            # centre, the most displaced ones, and random ones.
            # (Faces in creases whose offset points are ambiguous on the template itself are skipped.)
            tipped = np.nonzero(star_orientation(head, v) <= 0)[0][:40]
            moved = np.argsort(-np.linalg.norm((v - v0)[f].mean(1), axis=1))[:40]
            sample = np.unique(np.concatenate([tipped, moved, rng.choice(len(f), 60, replace=False)]))
            ok = np.ones(len(sample), dtype=bool)
            for verts, normals in ((v0, n0), (v, n)):
                centroid = verts[f[sample]].mean(1)
                w_in = winding_numbers(verts, f, centroid - 5e-4 * normals[sample])
                w_out = winding_numbers(verts, f, centroid + 5e-4 * normals[sample])
                good = (np.abs(w_in - 1) < 0.05) & (np.abs(w_out) < 0.05)
                if verts is v0:
                    ok = good
                    assert ok.mean() > 0.95
                else:
                    assert np.all(good[ok]), sample[ok & ~good]
        heads.append(v)
    heads = np.stack(heads)
    diffs = [np.sqrt(((heads[i] - heads[j]) ** 2).sum(-1).mean()) for i in range(20) for j in range(i)]
    assert min(diffs) > 0.008  # every pair differs by > 0.8% of the head height (RMS)
    heights = heads[:, :, 1].max(1) - np.array([lm(head, [152], h)[0, 1] for h in heads])
    assert 0.85 < heights.min() and heights.max() < 1.15


# --- expressions ---------------------------------------------------------------------------------
def test_expression_names(head):
    assert head.num_expression >= 20
    assert REQUIRED_EXPRESSIONS <= set(head.expression_names)
    assert len(set(head.expression_names)) == head.num_expression


def test_expressions_are_local_and_fold_free(head, arrays):
    v0, f = arrays
    n0 = face_normals(v0, f)
    nose_tip_y = lm(head, [1])[0, 1]
    eps = 1e-6
    for name in head.expression_names:
        d = head.expression_basis[head.expression_names.index(name)].numpy()
        moved = np.linalg.norm(d, axis=1) > eps
        assert np.linalg.norm(d, axis=1).max() > 0.002, f"{name} does nothing"
        if name.endswith("_L"):
            assert v0[moved, 0].min() > 0.0, f"{name} moves the right side"
        if name.endswith("_R"):
            assert v0[moved, 0].max() < 0.0, f"{name} moves the left side"
        if name.startswith(("jaw", "mouth")) and not name.startswith("mouthSmile"):
            assert v0[moved, 1].max() < nose_tip_y, f"{name} moves something above the nose"
        if name.startswith("mouthSmile"):  # a smile lifts the cheeks, but not the eyes
            assert v0[moved, 1].max() < lm(head, [145])[0, 1] - 0.05
        if name.startswith(("eye", "brow")):
            assert v0[moved, 1].min() > nose_tip_y, f"{name} moves something below the nose"
        v = v0 + d
        assert np.all((face_normals(v, f) * n0).sum(1) > 0), f"{name} flips a triangle"
        if name in ("jawOpen", "eyeBlink_L", "mouthSmile_R", "cheekPuff"):
            # no self-intersection where it moved (winding numbers just inside / outside)
            sample = np.nonzero(np.linalg.norm(d[f].mean(1), axis=1) > 1e-3)[0][::7][:150]
            n = face_normals(v, f)[sample]
            centroid = v[f[sample]].mean(1)
            assert np.all(np.abs(winding_numbers(v, f, centroid - 5e-4 * n) - 1) < 0.05), name
            assert np.all(np.abs(winding_numbers(v, f, centroid + 5e-4 * n)) < 0.05), name


def test_blink_closes_and_jaw_opens(head):
    up, low = lm(head, [386])[0], lm(head, [374])[0]  # left eye, middle of upper / lower lid
    v = head.vertices(expression={"eyeBlink_L": 1.0})
    up2, low2 = lm(head, [386], v)[0], lm(head, [374], v)[0]
    assert up[1] - low[1] > 0.02 and up2[1] - low2[1] < 0.3 * (up[1] - low[1])
    v = head.vertices(expression={"jawOpen": 1.0})
    gap = lm(head, [13], v)[0, 1] - lm(head, [14], v)[0, 1]
    assert gap > 0.04  # inner lips part by > 4% of the head height
    chin0, chin1 = lm(head, [152])[0], lm(head, [152], v)[0]
    assert chin1[1] < chin0[1] - 0.05


# --- landmarks -----------------------------------------------------------------------------------
def test_landmark_ids_match_mediapipe_contours(head):
    mp = pytest.importorskip("mediapipe.tasks.python.vision", reason="mediapipe not installed")
    C = mp.FaceLandmarksConnections
    groups = {
        "FACE_LANDMARKS_FACE_OVAL": [FACE_OVAL],
        "FACE_LANDMARKS_LIPS": [LIPS_LOWER_OUTER, LIPS_UPPER_OUTER],
        "FACE_LANDMARKS_LEFT_EYE": [LEFT_EYE_LOWER, LEFT_EYE_UPPER],
        "FACE_LANDMARKS_LEFT_EYEBROW": [LEFT_BROW_LOWER, LEFT_BROW_UPPER],
        "FACE_LANDMARKS_RIGHT_EYE": [RIGHT_EYE_LOWER, RIGHT_EYE_UPPER],
        "FACE_LANDMARKS_RIGHT_EYEBROW": [RIGHT_BROW_LOWER, RIGHT_BROW_UPPER],
    }
    for attr, chains in groups.items():
        edges = {(c.start, c.end) for c in getattr(C, attr)}
        for chain in chains:
            walked = set(zip(chain[:-1], chain[1:]))
            if attr == "FACE_LANDMARKS_FACE_OVAL":
                walked.add((chain[-1], chain[0]))
            assert walked <= edges, attr  # every step of the walk is a connection, in its direction
    contour_ids = {i for c in C.FACE_LANDMARKS_CONTOURS for i in (c.start, c.end)}
    assert set(CONTOUR_IDS) == contour_ids and len(CONTOUR_IDS) == 128
    ids = head.landmark_ids.tolist()
    assert set(contour_ids) | {468, 473} <= set(ids) and len(ids) == len(set(ids))


def test_landmarks_sit_on_the_right_features(head):
    L = head.landmarks_mediapipe(head.v_template.numpy())
    assert L.shape == (478, 3)
    assert np.isnan(L[100]).all() and np.isfinite(L[list(CONTOUR_IDS)]).all()
    left_eye = L[list(LEFT_EYE_LOWER + LEFT_EYE_UPPER)]
    right_eye = L[list(RIGHT_EYE_LOWER + RIGHT_EYE_UPPER)]
    assert np.all(left_eye[:, 0] > 0.05) and np.all(right_eye[:, 0] < -0.05)
    assert L[263, 0] > L[362, 0] > 0 > L[133, 0] > L[33, 0]  # outer corners outside inner ones
    assert L[473, 0] > 0 > L[468, 0]
    for brow, eye in ((LEFT_BROW_LOWER + LEFT_BROW_UPPER, LEFT_EYE_UPPER),
                      (RIGHT_BROW_LOWER + RIGHT_BROW_UPPER, RIGHT_EYE_UPPER)):
        assert L[list(brow), 1].min() > L[list(eye), 1].max()  # brows above the eyes
    for upper, lower in zip(LEFT_BROW_UPPER, LEFT_BROW_LOWER):
        assert L[upper, 1] > L[lower, 1]
    assert L[61, 0] < -0.08 and L[291, 0] > 0.08  # mouth corners: 61 right (-x), 291 left
    assert min(left_eye[:, 1].min(), right_eye[:, 1].min()) > L[[61, 291], 1].max() + 0.2
    assert L[0, 1] > L[13, 1] >= L[14, 1] > L[17, 1]  # upper lip above lower lip
    assert L[[61, 291], 1].max() < L[1, 1] < left_eye[:, 1].min()  # nose between mouth and eyes
    assert L[[1, 4], 2].max() == pytest.approx(np.nanmax(L[:, 2]))  # the nose tip (4 or 1) leads
    assert L[1, 2] > np.nanmax(np.delete(L[:, 2], [1, 4, 5, 19, 195])) - 0.01
    assert L[10, 1] == pytest.approx(L[list(FACE_OVAL), 1].max()) and L[152, 1] == L[list(FACE_OVAL), 1].min()
    assert L[454, 0] > 0.25 and L[234, 0] < -0.25


def test_face_oval_encloses_the_other_landmarks(head):
    from matplotlib.path import Path as PolyPath

    L = head.landmarks_mediapipe(head.v_template.numpy())
    oval = PolyPath(L[list(FACE_OVAL), :2])
    others = [i for i in head.landmark_ids.tolist() if i not in FACE_OVAL and i not in (152, 10, 175)]
    assert oval.contains_points(L[others, :2]).all()
    # The oval is walked monotonically clockwise in the frontal view: top -> +x -> chin -> -x.
    c = L[list(FACE_OVAL), :2].mean(0)
    ang = np.unwrap(np.arctan2(L[list(FACE_OVAL), 0] - c[0], L[list(FACE_OVAL), 1] - c[1]))
    assert np.all(np.diff(ang) > 0) and ang[-1] - ang[0] < 2 * np.pi


def test_contours_are_walked_in_order(head):
    L = head.landmarks_mediapipe(head.v_template.numpy())
    for chain in (LIPS_LOWER_OUTER, LIPS_UPPER_OUTER):
        assert np.all(np.diff(L[list(chain), 0]) > 0)  # right corner -> left corner
    for chain in (LEFT_EYE_LOWER, LEFT_EYE_UPPER, LEFT_BROW_LOWER, LEFT_BROW_UPPER):
        assert np.all(np.diff(L[list(chain), 0]) < 0)  # outer (+x) -> inner
    for chain in (RIGHT_EYE_LOWER, RIGHT_EYE_UPPER, RIGHT_BROW_LOWER, RIGHT_BROW_UPPER):
        assert np.all(np.diff(L[list(chain), 0]) > 0)  # outer (-x) -> inner
    steps = np.linalg.norm(np.diff(L[list(FACE_OVAL) + [10]], axis=0), axis=1)
    assert steps.max() < 2.0 * np.median(steps)  # evenly spaced around the face


def test_landmarks_follow_identity_and_are_on_the_surface(head, arrays):
    v0, f = arrays
    beta = np.random.default_rng(5).standard_normal(head.num_identity).astype(np.float32)
    v = head.vertices(beta)
    L = head.landmarks(v)
    bary = head.landmark_bary.numpy()
    assert np.all(bary >= -1e-6) and np.allclose(bary.sum(1), 1.0, atol=1e-5)
    tri = v[f[head.landmark_faces.numpy()]]
    assert np.allclose(L, np.einsum("lkc,lk->lc", tri, bary), atol=1e-6)
    assert np.abs(L - head.landmarks(head.v_template.numpy())).max() > 1e-3


# --- regions and UVs -----------------------------------------------------------------------------
def test_regions_partition_the_head(head, arrays):
    v, _ = arrays
    masks = {k: m.numpy() for k, m in head.regions.items()}
    assert set(masks) >= {"face", "scalp", "ears", "neck"}
    stacked = np.stack([masks[k] for k in ("face", "scalp", "ears", "neck")])
    assert np.all(stacked.sum(0) == 1)
    assert all(stacked[i].sum() > 300 for i in range(4))
    tip = np.argmax(v[:, 2])
    assert masks["face"][tip] and masks["scalp"][np.argmax(v[:, 1])] and masks["neck"][np.argmin(v[:, 1])]
    assert np.all(np.abs(v[masks["ears"], 0]) > 0.25)
    assert v[masks["neck"], 1].max() < -0.2 and v[masks["face"], 2].min() > -0.05


def test_uv_layout_has_few_seams(head, arrays):
    v, f = arrays
    uv, uf = head.uvs.numpy(), head.uv_faces.numpy()
    assert uf.shape == f.shape and uv.min() >= 0.0 and uv.max() <= 1.0
    # Vertices with more than one UV: the back seam and the two poles only.
    pairs = np.unique(np.stack([f.ravel(), uf.ravel()], 1), axis=0)
    multi = np.bincount(pairs[:, 0], minlength=len(v)) > 1
    assert multi.sum() < 0.02 * len(v)
    assert np.all(v[multi, 2] < 0.0) or np.all(np.abs(v[multi, 0]) < 1e-3)  # the seam runs at the back
    t = uv[uf]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    signed = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    assert np.all(signed > 0)  # no flipped UV triangle
    face_area = signed[head.regions["face"].numpy()[f].all(1)].sum()
    assert face_area > 0.25 * signed.sum()  # the face gets a generous share of the texture


# --- API -----------------------------------------------------------------------------------------
def test_vertices_api_numpy_torch_and_errors(head):
    V = head.num_vertices
    assert head.vertices().shape == (V, 3) and isinstance(head.vertices(), torch.Tensor)
    beta = np.zeros(10, dtype=np.float32)
    beta[0] = 1.0
    v = head.vertices(beta)
    assert isinstance(v, np.ndarray) and np.allclose(v, (head.v_template + head.identity_basis[0]).numpy())
    b = torch.zeros(2, 5, requires_grad=True)
    out = head.vertices(b, {"jawOpen": 0.5})
    assert out.shape == (2, V, 3)
    out.sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    w = head.expression_vector({"jawOpen": 1.0})
    assert torch.allclose(head.vertices(expression=w), head.vertices(expression={"jawOpen": 1.0}))
    with pytest.raises(HeadgenError, match="did you mean 'jawOpen'"):
        head.vertices(expression={"jawopen": 1.0})
    with pytest.raises(HeadgenError, match="identity components"):
        head.vertices(np.zeros(head.num_identity + 1))
    lmb = head.landmarks(out)
    assert lmb.shape == (2, head.num_landmarks, 3)
    mp = head.landmarks_mediapipe(out)
    assert mp.shape == (2, 478, 3) and torch.isnan(mp[:, 100]).all()


def test_registered_builtin_head():
    assert BuiltinHead.registered_kind == "head" and BuiltinHead.registered_name == "builtin"
    model = BuiltinHead(BuiltinHead.Config(num_identity=12)).load()
    assert model.num_identity == 12 and model.num_vertices > 10_000
    with pytest.raises(HeadgenError, match="num_identity"):
        BuiltinHead(BuiltinHead.Config(num_identity=10_000)).load()
    with pytest.raises(HeadgenError, match="resolution"):
        load_builtin_head("ultra")


def test_identity_grid_script(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "render_identity_grid.py"
    spec = importlib.util.spec_from_file_location("render_identity_grid", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.identity_grid(tmp_path / "grid.png", count=4, size=64, cols=2)
    from PIL import Image

    img = np.asarray(Image.open(out).convert("L"), dtype=np.float64)
    assert img.shape[0] > 100 and img.std() > 10  # something was drawn
