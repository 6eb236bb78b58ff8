"""``launch.py --config RECIPE --viewer``: the viewer during a run, fed by the optimisation loop.

Every ``every`` steps the training thread copies the current render (the first view, [H,W,3]) and,
for mesh representations, the current surface's vertices to the CPU, and hands them to a sender
thread through a one-slot queue (a newer update replaces one not yet sent). Encoding and sending
happen on that thread. With no browser connected the loop does nothing at all beyond one check
of the client count, so an unwatched run is not slowed (benchmarks/bench_viewer_overhead.py).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from pytorch_lightning.callbacks import Callback

from headgen.errors import HeadgenError


@dataclass
class LiveUpdate:
    stage: str
    step: int
    loss: float | None
    image: np.ndarray | None
    vertices: np.ndarray | None
    faces: np.ndarray | None


class LiveViewer:
    """The server and GUI of a live run; :meth:`callback` goes into each optimise stage's trainer."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, every: int = 10, log: Any = print):
        from headgen.viewer.serve import start_server, url

        if every < 1:
            raise HeadgenError(f"--viewer-every {every}: must be at least 1 step")
        self.every = every
        self.server = start_server(host, port)
        self.url = url(self.server)
        self.sent = 0
        """Updates sent to connected clients (tests and the benchmark read it)."""
        self._queue: queue.Queue[LiveUpdate | None] = queue.Queue(maxsize=1)
        self._faces_sent: Any = None
        gui = self.server.gui
        from headgen.viewer.app import camera_position

        self.server.scene.set_up_direction("+y")
        self.server.initial_camera.position = camera_position(20.0, 10.0)
        self.server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self.server.initial_camera.fov = np.radians(30.0)
        self.status = gui.add_markdown("**live run**: starting")
        self.image = gui.add_image(np.full((64, 64, 3), 255, np.uint8), label="current render", format="jpeg")
        self.mesh: Any = None
        self._thread = threading.Thread(target=self._send_loop, name="headgen-live-viewer", daemon=True)
        self._thread.start()
        log(f"Live viewer: {self.url}")

    def watched(self) -> bool:
        return bool(self.server.get_clients())

    def wants(self, step_after: int, max_steps: int) -> bool:
        """Whether the step that ends at global step ``step_after`` is shown (cheap when unwatched)."""
        return (step_after % self.every == 0 or step_after == max_steps) and self.watched()

    def offer(self, update: LiveUpdate) -> None:
        """Queue ``update``, replacing one the sender has not taken yet (never blocks training)."""
        try:
            self._queue.get_nowait()
        except queue.Empty:
            pass
        try:
            self._queue.put_nowait(update)
        except queue.Full:  # the sender raced us to the slot: its update is as new as ours
            pass

    def _send_loop(self) -> None:
        while True:
            update = self._queue.get()
            if update is None:
                return
            loss = "" if update.loss is None else f", loss {update.loss:.4g}"
            with self.server.atomic():
                self.status.content = f"**live run**: stage `{update.stage}`, step {update.step}{loss}"
                if update.image is not None:
                    self.image.image = update.image
                if update.vertices is not None:
                    if self.mesh is None or update.faces is not self._faces_sent:
                        if self.mesh is not None:
                            self.mesh.remove()
                        self.mesh = self.server.scene.add_mesh_simple(
                            "/live/surface", update.vertices, update.faces, color=(205, 200, 195))
                        self._faces_sent = update.faces
                    else:
                        self.mesh.vertices = update.vertices
            self.sent += 1

    def callback(self, stage: str) -> Callback:
        return _LiveCallback(self, stage)

    def close(self) -> None:
        self.offer(None)  # type: ignore[arg-type]
        self._thread.join(timeout=10)
        self.server.stop()


class _LiveCallback(Callback):
    def __init__(self, viewer: LiveViewer, stage: str):
        self.viewer = viewer
        self.stage = stage
        self._faces: tuple[int, np.ndarray] | None = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = int(trainer.global_step)
        if not self.viewer.wants(step, trainer.max_steps):
            return
        import torch

        render = getattr(pl_module, "last_preview", None)
        pl_module.last_preview = None
        image = None
        if render is not None:
            image = (render.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        vertices = faces = None
        with torch.no_grad():
            surface = pl_module.representation.render_input()
            mesh = getattr(surface, "mesh", None)
            if mesh is not None:
                from headgen.viewer.stage_results import surface_arrays

                vertices, faces = surface_arrays(surface)
                # the same topology keeps its array object, so the sender only re-sends vertices
                key = len(faces)
                if self._faces is not None and self._faces[0] == key and np.array_equal(self._faces[1], faces):
                    faces = self._faces[1]
                else:
                    self._faces = (key, faces)
        loss = getattr(pl_module, "last_terms", {}).get("loss")
        self.viewer.offer(LiveUpdate(self.stage, step, loss, image, vertices, faces))


def preview_image(render: dict[str, Any]) -> Any:
    """The first view of the first colour output of a render ([H,W,3] on the CPU), or None (a
    latent-only render has nothing to show)."""
    for key in ("rgb", "shading", "normal"):
        value = render.get(key)
        if value is not None and value.dim() == 4 and value.shape[-1] == 3:
            image = value[0].detach().float()
            return (image * 0.5 + 0.5 if key == "normal" else image).cpu()
    return None
