"""FLAME loader on synthetic files in the real formats (chumpy pickle without chumpy, npz embedding)."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from headgen.errors import HeadgenError
from headgen.heads.flame import FlameHead, load_flame, restricted_load

V, F, S, E = 12, 20, 6, 4


def make_fake_chumpy() -> type:
    """A class ``chumpy.ch.Ch`` that pickles its array in state ``x``, plus the clutter real Ch
    objects carry (registered in ``sys.modules`` only while pickling)."""

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()
            self._itr = None

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": self._dirty_vars, "_itr": self._itr, "dterms": ("x",)}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    return Ch


@pytest.fixture
def flame_dir(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(V, 3)) * 0.05
    v[0] = [0.0, 0.12, 0.0]  # crown
    v[1] = [0.0, -0.10, 0.08]  # chin
    f = rng.integers(0, V, size=(F, 3))
    f[:, 1] = (f[:, 0] + 1) % V
    f[:, 2] = (f[:, 0] + 2) % V
    shapedirs = rng.normal(size=(V, 3, S + E)) * 1e-3
    Ch = make_fake_chumpy()
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    ch.Ch, chumpy.ch = Ch, ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, ch
    try:
        model = {
            "v_template": Ch(v),
            "f": f.astype(np.uint32),
            "shapedirs": Ch(shapedirs),
            "posedirs": rng.normal(size=(V, 3, 36)),
            "J_regressor": scipy.sparse.csc_matrix(rng.random((5, V))),
            "weights": Ch(rng.random((V, 5))),
            "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
            "bs_style": "lbs",
            "bs_type": "lrotmin",
        }
        with open(tmp_path / "generic_model.pkl", "wb") as fh:
            pickle.dump(model, fh, protocol=2)  # as the real file: protocol 2, Python 2 module names
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    assert "chumpy" not in sys.modules
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=np.array([0, 3, 5]),
             lmk_b_coords=np.array([[1.0, 0, 0], [0.2, 0.3, 0.5], [0, 0, 1.0]]),
             landmark_indices=np.array([152, 1, 33]))
    np.save(tmp_path / "truth.npy", {"v": v, "f": f, "shapedirs": shapedirs}, allow_pickle=True)
    return tmp_path


def truth(d: Path) -> dict:
    return np.load(d / "truth.npy", allow_pickle=True).item()


def test_chumpy_pickle_loads_without_chumpy(flame_dir):
    raw = restricted_load(flame_dir / "generic_model.pkl")
    t = truth(flame_dir)
    assert isinstance(raw["v_template"], np.ndarray) and np.allclose(raw["v_template"], t["v"])
    assert scipy.sparse.issparse(raw["J_regressor"]) and raw["J_regressor"].shape == (5, V)
    assert raw["weights"].shape == (V, 5) and raw["bs_style"] == "lbs"
    assert "chumpy" not in sys.modules


def test_flame_model(flame_dir):
    t = truth(flame_dir)
    head = load_flame(flame_dir / "generic_model.pkl", flame_dir / "mediapipe_landmark_embedding.npz",
                      shape_components=S, normalize=False)
    assert head.num_vertices == V and head.num_faces == F
    assert np.allclose(head.v_template.numpy(), t["v"]) and np.array_equal(head.faces.numpy(), t["f"])
    assert head.num_identity == S and head.num_expression == E
    assert np.allclose(head.identity_basis[2].numpy(), t["shapedirs"][:, :, 2])
    assert np.allclose(head.expression_basis[1].numpy(), t["shapedirs"][:, :, S + 1])
    assert head.expression_names[0] == "flame_exp_000" and head.uvs is None
    beta = np.zeros(S, dtype=np.float32)
    beta[0] = 2.0
    assert np.allclose(head.vertices(beta), t["v"] + 2.0 * t["shapedirs"][:, :, 0], atol=1e-6)
    L = head.landmarks_mediapipe(head.v_template.numpy())
    assert np.allclose(L[152], t["v"][t["f"][0, 0]], atol=1e-6)
    expected = (0.2 * t["v"][t["f"][3, 0]] + 0.3 * t["v"][t["f"][3, 1]] + 0.5 * t["v"][t["f"][3, 2]])
    assert np.allclose(L[1], expected, atol=1e-6)
    assert np.isnan(L[0]).all()
    assert head.scale == pytest.approx(t["v"][:, 1].max() - L[152, 1], rel=1e-5) and head.units == "m"
    normed = load_flame(flame_dir / "generic_model.pkl", flame_dir / "mediapipe_landmark_embedding.npz",
                        shape_components=S)
    assert normed.scale == pytest.approx(1.0)
    assert normed.landmarks_mediapipe(normed.v_template.numpy())[152, 1] == pytest.approx(-0.5, abs=1e-5)
    assert load_flame(flame_dir / "generic_model.pkl", shape_components=S, num_identity=2,
                      num_expression=1, normalize=False).num_expression == 1


def test_flame_registered(flame_dir):
    assert FlameHead.registered_name == "flame"
    cfg = FlameHead.Config(path=str(flame_dir / "generic_model.pkl"),
                           landmark_embedding=str(flame_dir / "mediapipe_landmark_embedding.npz"),
                           shape_components=S, num_identity=3)
    head = FlameHead(cfg).load()
    assert head.num_identity == 3 and head.scale == pytest.approx(1.0)


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_other_classes(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(HeadgenError, match="refusing to load"):
        restricted_load(p)


def test_flame_errors(flame_dir, tmp_path):
    with pytest.raises(HeadgenError, match="FLAME model not found"):
        load_flame(tmp_path / "missing.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x00 definitely not a pickle")
    with pytest.raises(HeadgenError, match="not a readable model pickle"):
        load_flame(tmp_path / "junk.pkl")
    # 100k nested lists: the unpickler builds them without recursion, walking them would overflow
    (tmp_path / "deep.pkl").write_bytes(b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".")
    with pytest.raises(HeadgenError, match="deep.pkl: not a model pickle \\(its objects are nested too deeply\\)"):
        load_flame(tmp_path / "deep.pkl")
    partial = {"v_template": np.zeros((V, 3)), "f": np.zeros((F, 3))}
    (tmp_path / "partial.pkl").write_bytes(pickle.dumps(partial))
    with pytest.raises(HeadgenError, match="'shapedirs' is missing"):
        load_flame(tmp_path / "partial.pkl")
    (tmp_path / "shapes.pkl").write_bytes(pickle.dumps(
        {"v_template": np.zeros((V, 3)), "f": np.zeros((F, 3), int), "shapedirs": np.zeros((V + 1, 3, 4))}))
    with pytest.raises(HeadgenError, match="inconsistent shapes"):
        load_flame(tmp_path / "shapes.pkl")
    with pytest.raises(HeadgenError, match="needs the chin"):
        load_flame(flame_dir / "generic_model.pkl", shape_components=S)  # normalize without landmarks
    np.savez(tmp_path / "emb.npz", lmk_face_idx=np.array([0]), lmk_b_coords=np.ones((1, 3)) / 3)
    with pytest.raises(HeadgenError, match="missing array 'landmark_indices'"):
        load_flame(flame_dir / "generic_model.pkl", tmp_path / "emb.npz", shape_components=S)
    np.savez(tmp_path / "emb2.npz", lmk_face_idx=np.array([F + 3]), lmk_b_coords=np.ones((1, 3)) / 3,
             landmark_indices=np.array([152]))
    with pytest.raises(HeadgenError, match="outside the model"):
        load_flame(flame_dir / "generic_model.pkl", tmp_path / "emb2.npz", shape_components=S)


def test_chumpy_expression_object_is_refused(tmp_path):
    Ch = make_fake_chumpy()

    class Select(Ch):  # a chumpy operation: no plain array in its state
        def __getstate__(self):
            return {"a": np.zeros(3), "idxs": np.arange(2)}

    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    mods = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "chumpy.reordering")}
    mods["chumpy.ch"].Ch = Ch
    mods["chumpy.reordering"].Select = Select
    sys.modules.update(mods)
    try:
        data = pickle.dumps({"v_template": Select(np.zeros(3))}, protocol=2)
    finally:
        for name in mods:
            del sys.modules[name]
    (tmp_path / "ops.pkl").write_bytes(data)
    with pytest.raises(HeadgenError, match="chumpy expression object"):
        restricted_load(tmp_path / "ops.pkl")
