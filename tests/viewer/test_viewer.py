"""The 3D viewer (issue 19): head.glb taken apart for expression sliders, the viewer in a real
headless browser, the live viewer during a run, and its errors."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pygltflib
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins"))
from browser import canvas_box, chromium, screenshot, wait_for  # noqa: E402
from runhelpers import launch_demo  # noqa: E402

from headgen.cli import main  # noqa: E402
from headgen.viewer.glb_meshes import read_glb  # noqa: E402

REPO = Path(__file__).parents[2]
RECIPE = "tests/recipes/viewer_tiny.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return launch_demo(RECIPE, tmp_path_factory.mktemp("viewer"), "demo.views=exact")


def test_glb_meshes_move_like_morph_targets(run: Path):
    head = read_glb(run / "assets" / "head.glb")
    doc = pygltflib.GLTF2().load_binary(str(run / "assets" / "head.glb"))
    assert len(head.target_names) == len(doc.meshes[0].extras["targetNames"]) > 10
    assert head.clip is not None and head.clip.duration == pytest.approx(2.0, abs=0.05)
    skin = head.meshes[0]
    k = head.target_names.index("jawOpen")
    w = np.zeros(len(head.target_names))
    w[k] = 0.7
    moved = pygltflib.GLTF2.load_from_bytes(skin.glb(w))
    acc = moved.accessors[moved.meshes[0].primitives[0].attributes.POSITION]
    view = moved.bufferViews[acc.bufferView]
    pos = np.frombuffer(moved.binary_blob(), np.float32, acc.count * 3, view.byteOffset).reshape(-1, 3)
    np.testing.assert_allclose(pos, skin.base + 0.7 * skin.deltas[k], atol=1e-6)
    assert np.abs(pos - skin.base).max() > 0.01  # the jaw opens
    # bounds are widened once for any weights in [0, 1]: they hold the moved positions
    assert (pos >= np.array(acc.min) - 1e-6).all() and (pos <= np.array(acc.max) + 1e-6).all()
    assert skin.glb(np.zeros(len(w))) is skin.template
    assert skin.moved_by(np.array([k]))
    # the textures travel with the mesh, reduced above the viewer's cap
    assert moved.images and moved.materials[0].pbrMetallicRoughness.baseColorTexture is not None
    import imageio.v3 as iio

    def first_image(data: bytes) -> np.ndarray:
        doc = pygltflib.GLTF2.load_from_bytes(data)
        view = doc.bufferViews[doc.images[0].bufferView]
        return iio.imread(doc.binary_blob()[view.byteOffset:view.byteOffset + view.byteLength])

    assert first_image(skin.template).shape[:2] == (64, 64)  # the recipe's texture_size, under the cap
    assert first_image(read_glb(run / "assets" / "head.glb", max_texture=32).meshes[0].template).shape[:2] == (32, 32)


def _head_drawn(driver) -> np.ndarray | None:
    """The canvas left of the control panel once the head is drawn (non-background pixels in its
    centre) and has stopped changing (meshes fade in)."""
    left, top, width, height = canvas_box(driver)
    shots = []
    for _ in range(2):
        img = screenshot(driver)[top + height // 10: top + height, left + width // 5: left + 3 * width // 5]
        shots.append(img.astype(int))
        time.sleep(0.7)
    h, w = shots[1].shape[:2]
    centre = shots[1][h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    drawn = (np.abs(centre - 255).sum(-1) > 60).mean()  # the background is white
    return shots[1] if drawn > 0.2 and _changed(shots[0], shots[1]) < 20 else None


def _changed(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels whose colour moved by more than 30 (sum over channels)."""
    return int((np.abs(a - b).sum(-1) > 30).sum())


def test_stage_results_come_side_by_side_on_demand(run: Path):
    from headgen.viewer.app import open_viewer

    server, viewer = open_viewer(run, port=free_port())
    try:
        assert not any(k.startswith("stage:") for k in viewer.handles)  # loaded only when asked
        viewer.stage_toggle.value = True
        wait_for(lambda: {"stage:identity", "stage:texture"} <= set(viewer.handles) or None, 60,
                 "the stage results did not appear")
        mesh = viewer.handles["stage:texture"]
        assert mesh.vertices.shape[1] == 3 and len(mesh.faces) > 1000
        # the losses tab has the texture stage's curve, the metrics tab the run's scores
        curves = viewer.run.curves()
        assert list(curves) == ["texture"] and len(curves["texture"][0]) >= 1
    finally:
        viewer.close()
        server.stop()


def test_a_bench_folder_offers_its_finished_runs(run: Path, tmp_path: Path):
    import shutil

    from headgen.viewer.app import open_viewer

    for key in ("a", "b"):
        shutil.copytree(run, tmp_path / "runs" / key / run.name)
    unfinished = tmp_path / "runs" / "c" / "x@1"
    unfinished.mkdir(parents=True)
    (unfinished / "state.json").write_text('{"order": ["s"], "stages": {"s": {"status": "pending"}}}')
    server, viewer = open_viewer(tmp_path, port=free_port())
    try:
        assert sorted(r.root.parent.name for r in viewer.runs) == ["a", "b"]  # the unfinished run is left out
        viewer.show(viewer.runs[1])
        assert viewer.run is viewer.runs[1] and viewer.head is not None and len(viewer.sliders) > 10
    finally:
        viewer.close()
        server.stop()


def test_a_watched_run_ends_showing_its_result_in_a_terminal(run: Path, monkeypatch: pytest.MonkeyPatch):
    from headgen.cli import _show_result
    from headgen.viewer.live import LiveViewer

    live = LiveViewer(port=free_port(), log=lambda _: None)
    shown = []
    try:
        monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
        assert _show_result(live, run, wait=shown.append) is False and not shown
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
        assert _show_result(live, run, wait=shown.append)
        assert len(shown) == 1 and shown[0].server is live.server  # the run's head and GUI on the live server
        assert shown[0].head is not None and len(shown[0].sliders) > 10
    finally:
        live.close()


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def test_an_empty_run_directory_is_one_clear_error(tmp_path: Path):
    (tmp_path / "state.json").write_text('{"order": ["coarse"], "stages": {"coarse": {"status": "pending"}}}')
    code, err = _cli("--view", str(tmp_path))
    assert code == 2
    assert err.strip().count("\n") == 0 and "has no results yet" in err and "--resume" in err
    code, err = _cli("--view", str(tmp_path / "nowhere"))
    assert code == 2 and "no such folder" in err


def test_a_port_in_use_is_named_with_another_to_try(run: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, err = _cli("--view", str(run), "--port", str(port))
    assert code == 2 and err.strip().count("\n") == 0
    other = re.search(r"in use .*try --port (\d+)", err)
    assert f"port {port} on 127.0.0.1 is in use" in err and other and int(other.group(1)) != port


def test_the_live_viewer_sends_updates_to_a_connected_browser(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "launch.py", "--config", RECIPE, "--output-dir", str(tmp_path), "prior=demo",
         "demo.views=exact", "stages.texture.steps=12", "--viewer", "--viewer-every", "1", "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[int] = set()
    try:
        with chromium() as driver:
            def page() -> bool:
                try:
                    driver.get(f"http://127.0.0.1:{port}")
                    return True
                except Exception:
                    return True if proc.poll() is not None else None
            wait_for(page, 120, "the live viewer did not come up")
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline:
                steps = re.findall(r"stage texture, step (\d+)", driver.find_element("tag name", "body").text)
                seen.update(int(s) for s in steps)
                time.sleep(0.2)
    finally:
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    sent = re.search(r"Live viewer closed after (\d+) updates", out)
    assert sent and int(sent.group(1)) >= 2, out[-2000:]
    assert len(seen) >= 2, f"the browser showed steps {sorted(seen)}; {out[-1500:]}"
