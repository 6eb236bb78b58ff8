"""The run viewer: a viser scene of the head with its textures and hair, a slider per expression,
the GLB's animation clip, each stage's result, loss curves and metrics, camera presets.

Scene coordinates are headgen's (y up, the head about one unit tall at the origin, facing +z).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from headgen.viewer.glb_meshes import GlbHead, read_glb
from headgen.viewer.run_data import RunInfo

CAMERA_DISTANCE = 4.0
"""World units from the origin: the whole head and its hair in view at the 30 degree field of view."""
PRESETS = {"front": 0.0, "side": 90.0, "back": 180.0}
"""Camera presets: azimuth in degrees (0 = in front of the face, 90 = the subject's left)."""
PLAY_FPS = 20.0
TURNTABLE_SECONDS = 12.0


def camera_position(azimuth_deg: float, elevation_deg: float = 5.0, distance: float = CAMERA_DISTANCE) -> np.ndarray:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([distance * math.cos(el) * math.sin(az), distance * math.sin(el),
                     distance * math.cos(el) * math.cos(az)])


class RunViewer:
    """Builds the scene and GUI of one or more runs on a viser server and keeps them live."""

    def __init__(self, server: Any, runs: list[RunInfo], log: Any = print):
        self.server = server
        self.runs = runs
        self.log = log
        self.lock = threading.RLock()
        self.head: GlbHead | None = None
        self.handles: dict[str, Any] = {}
        self.weights = np.zeros(0)
        self.sliders: list[Any] = []
        self.updates = 0
        """GLB re-sends made for expressions and the clip (tests and the benchmark read it)."""
        self._stop = threading.Event()
        self._gui: list[Any] = []
        self._playing = False
        self._turntable = False
        server.scene.set_up_direction("+y")
        server.initial_camera.position = camera_position(20.0, 10.0)
        server.initial_camera.look_at = (0.0, 0.0, 0.0)
        server.initial_camera.fov = math.radians(30.0)  # the exporters' previews' field of view
        self._build_static_gui()
        self.show(runs[0])
        threading.Thread(target=self._animate, name="headgen-viewer-animate", daemon=True).start()

    # ------------------------------------------------------------------ GUI
    def _build_static_gui(self) -> None:
        gui = self.server.gui
        gui.configure_theme(titlebar_content=None, control_width="medium")
        if len(self.runs) > 1:
            labels = [f"{i + 1}. {r.label}"[:80] for i, r in enumerate(self.runs)]
            pick = gui.add_dropdown("Run", tuple(labels), initial_value=labels[0])

            @pick.on_update
            def _(_: Any) -> None:
                self.show(self.runs[labels.index(pick.value)])

        with gui.add_folder("Camera"):
            for name, az in PRESETS.items():
                button = gui.add_button(name.capitalize())
                button.on_click(lambda _, az=az: self.set_camera(az))
            spin = gui.add_checkbox("Turntable", initial_value=False)

            @spin.on_update
            def _(_: Any) -> None:
                self._turntable = spin.value

    def show(self, run: RunInfo) -> None:
        """Replace the scene and the run's GUI with ``run``."""
        with self.lock:
            self._playing = False
            for handle in list(self.handles.values()) + self._gui:
                handle.remove()
            self.handles, self._gui, self.sliders = {}, [], []
            self.run = run
            gui = self.server.gui
            self._gui.append(gui.add_markdown(f"**{run.method}**: {run.prompt}  \n`{run.root}`"))
            self.head = read_glb(run.glb) if run.glb is not None else None
            if self.head is not None:
                self.weights = np.zeros(len(self.head.target_names))
                for mesh in self.head.meshes:
                    self.handles[mesh.name] = self.server.scene.add_glb(f"/head/{mesh.name}", mesh.template)
                self._expression_gui()
            else:
                self._gui.append(gui.add_markdown("No head.glb in this run's assets (it has no export stage yet)."))
            tabs = gui.add_tab_group()
            self._gui.append(tabs)
            self._stages_tab(tabs.add_tab("Stages"))
            self._curves_tab(tabs.add_tab("Losses"))
            self._metrics_tab(tabs.add_tab("Metrics"))

    def _expression_gui(self) -> None:
        assert self.head is not None
        gui = self.server.gui
        if self.head.clip is not None:
            folder = gui.add_folder(f"Animation: {self.head.clip.name} ({self.head.clip.duration:.1f} s)")
            self._gui.append(folder)
            with folder:
                play = gui.add_checkbox("Play clip", initial_value=False)

                @play.on_update
                def _(_: Any) -> None:
                    self._playing = play.value
                    if not play.value:
                        self._apply(self.weights, None, changed=np.arange(len(self.weights)))
        if not self.head.target_names:
            return
        folder = gui.add_folder(f"Expressions ({len(self.head.target_names)})", expand_by_default=False)
        self._gui.append(folder)
        with folder:
            reset = gui.add_button("Neutral")
            reset.on_click(lambda _: self.set_weights(np.zeros(len(self.weights))))
            for k, name in enumerate(self.head.target_names):
                slider = gui.add_slider(name, 0.0, 1.0, 0.01, 0.0)
                slider.on_update(lambda _, k=k, s=slider: self.set_weight(k, float(s.value)))
                self.sliders.append(slider)

    def _stages_tab(self, tab: Any) -> None:
        with tab:
            rows = ["| stage | kind | status | s |", "|---|---|---|---|"]
            rows += [f"| {s.name} | {s.kind} | {s.status} | {s.seconds:.0f} |" for s in self.run.stages]
            self.server.gui.add_markdown("\n".join(rows))
            if self.run.preview is not None:
                import imageio.v3 as iio

                self.server.gui.add_image(iio.imread(self.run.preview)[..., :3], label="preview.png", format="jpeg")
            shown = self.server.gui.add_checkbox("Stage results side by side", initial_value=False)
            status = self.server.gui.add_markdown("")
            images = self.server.gui.add_folder("Stage renders")

        self.stage_toggle = shown

        @shown.on_update
        def _(_: Any) -> None:
            if shown.value:
                threading.Thread(target=self._load_stages, args=(self.run, status, images), daemon=True).start()
            for key, handle in self.handles.items():
                if key.startswith("stage:"):
                    handle.visible = shown.value

    def _load_stages(self, run: RunInfo, status: Any, images: Any) -> None:
        """Each stage's result as a grey mesh beside the head and a front render (loaded on demand:
        rebuilding a NeRF's surface takes seconds)."""
        from headgen.viewer.stage_results import stage_preview, stage_surface, surface_arrays

        done = [s for s in run.stages if s.has_result]
        for i, stage in enumerate(done):
            if f"stage:{stage.name}" in self.handles or run is not self.run:
                continue
            status.content = f"loading stage {stage.name} ({i + 1}/{len(done)}) ..."
            try:
                surface = stage_surface(run.root, stage.name)
                verts, faces = surface_arrays(surface)
                image = stage_preview(surface)
            except Exception as exc:  # shown in the GUI: one stage that does not load keeps the others
                status.content = f"stage {stage.name}: not shown ({type(exc).__name__}: {exc})"
                continue
            with self.lock:
                if run is not self.run:
                    return
                offset = (i - (len(done) - 1) / 2) * 1.4
                self.handles[f"stage:{stage.name}"] = self.server.scene.add_mesh_simple(
                    f"/stages/{stage.name}", verts, faces, color=(200, 200, 205), position=(offset, 0.0, -2.5))
                self.handles[f"label:{stage.name}"] = self.server.scene.add_label(
                    f"/stages/{stage.name}/label", stage.name, position=(0.0, 0.75, 0.0))
                with images:
                    self._gui.append(self.server.gui.add_image(image, label=stage.name, format="jpeg"))
        status.content = f"{len(done)} stage results behind the head"

    def _curves_tab(self, tab: Any) -> None:
        curves = self.run.curves()
        with tab:
            if not curves:
                self.server.gui.add_markdown("No optimisation logs in this run.")
            for stage, (steps, losses) in curves.items():
                y = np.asarray(losses, dtype=np.float64)
                self.server.gui.add_uplot(
                    (np.asarray(steps, dtype=np.float64), y),
                    ({"label": "step"}, {"label": f"{stage} loss", "stroke": "#3b82f6", "width": 1.5}),
                    title=f"{stage}: train/loss", aspect=2.0,
                    scales={"y": {"distr": 3}} if (y > 0).all() else None,  # log scale: SDS losses span decades
                )

    def _metrics_tab(self, tab: Any) -> None:
        rows = ["| metric | value |", "|---|---|"]
        for key, value in self.run.metrics.items():
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append(f"| {key} | {text[:60]} |")
        with tab:
            self.server.gui.add_markdown("\n".join(rows) if len(rows) > 2 else "No metrics recorded.")

    # ------------------------------------------------------------------ head updates
    def set_weight(self, k: int, value: float) -> None:
        with self.lock:
            if self.weights[k] == value:
                return
            self.weights[k] = value
            self._apply(self.weights, None, changed=np.array([k]))

    def set_weights(self, weights: np.ndarray) -> None:
        with self.lock:
            changed = np.flatnonzero(weights != self.weights)
            self.weights = np.asarray(weights, dtype=np.float64).copy()
            for slider, w in zip(self.sliders, self.weights):
                if slider.value != w:
                    slider.value = float(w)  # its callback finds the weight already set
            self._apply(self.weights, None, changed)

    def _apply(self, weights: np.ndarray, rotation: np.ndarray | None, changed: np.ndarray) -> None:
        """Re-send the meshes a change of ``changed`` moves; rotate the head (glTF xyzw) if given."""
        if self.head is None:
            return
        with self.lock, self.server.atomic():
            for mesh in self.head.meshes:
                if len(changed) and mesh.moved_by(changed):
                    self.handles[mesh.name].glb_data = mesh.glb(weights)
                    self.updates += 1
            if rotation is not None:
                x, y, z, w = (float(c) for c in rotation)
                for mesh in self.head.meshes:
                    self.handles[mesh.name].wxyz = (w, x, y, z)

    def set_camera(self, azimuth: float) -> None:
        for client in self.server.get_clients().values():
            with client.atomic():
                client.camera.position = camera_position(azimuth)
                client.camera.look_at = (0.0, 0.0, 0.0)

    def _animate(self) -> None:
        """The clip and the turntable, on one thread at PLAY_FPS."""
        start = time.monotonic()
        while not self._stop.wait(1.0 / PLAY_FPS):
            now = time.monotonic() - start
            if self._playing and self.head is not None and self.head.clip is not None:
                clip = self.head.clip
                w, q = clip.at(now % max(clip.duration, 1e-3))
                self._apply(w, q, changed=np.arange(len(w)))
            if self._turntable:
                self.set_camera(360.0 * (now % TURNTABLE_SECONDS) / TURNTABLE_SECONDS)

    def close(self) -> None:
        self._stop.set()


def open_viewer(folder: str | Path, host: str = "127.0.0.1", port: int = 8080,
                log: Any = print) -> tuple[Any, RunViewer]:
    """Start a server for a run directory or bench folder; (server, viewer). The caller keeps it alive."""
    from headgen.viewer.run_data import find_runs
    from headgen.viewer.serve import start_server

    runs = find_runs(Path(folder))
    server = start_server(host, port)
    try:
        viewer = RunViewer(server, runs, log=log)
    except BaseException:
        server.stop()
        raise
    return server, viewer
