"""The viewer's web server: one viser server, a panel and a render state per browser tab.

viser serves its bundled web client (no network access needed) and reports each tab's
camera; every tab gets its own controls, overlays and background image, so tabs never
interfere except by sharing the CPU. Connect and disconnect callbacks only register or
drop a tab with the :class:`~kilonerf.viewer.render_loop.RenderLoop`, so a tab that
closes (or a connection that drops) never touches the server itself.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import viser

from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.run.models import available_models, load_run_scene
from kilonerf.run.folder import RunDir
from kilonerf.viewer.adaptive import PreviewSizer
from kilonerf.viewer.camera import from_opencv, home_view, scene_up
from kilonerf.viewer.controls import Controls, add_controls, readout_text
from kilonerf.viewer.frames import Frame, FrameRenderer, RenderSettings
from kilonerf.viewer.overlays import Overlays, add_overlays
from kilonerf.viewer.render_loop import RenderLoop


# A tab may close while its frame is on the way; viser then warns that the frame is dropped,
# which is exactly what should happen.
warnings.filterwarnings("ignore", message=r"Queued a \w+ on a closed connection", category=UserWarning)


@dataclass(frozen=True)
class ViewerOptions:
    height: int | None = None
    """Full-resolution frame height (None: the scene's photos' height, within [64, 800])."""
    model: str | None = None
    """Model shown first (None: the student when trained, else the teacher)."""
    cameras: bool = True
    box: bool = False
    grid: bool = False
    budget_s: float = 0.06
    """Render time aimed at for a frame while the camera moves (>= 10 fps with encoding)."""
    settle_s: float = 0.15
    """Stillness after which the full-resolution frame is rendered."""
    jpeg_quality: tuple[int, int] = (70, 92)
    """JPEG quality of moving and of full-resolution frames."""


@dataclass
class _Tab:
    client: viser.ClientHandle
    controls: Controls
    overlays: Overlays
    lock: threading.Lock = field(default_factory=threading.Lock)


class Viewer:
    """A running viewer of one run directory; :meth:`start` serves it, :meth:`stop` ends it."""

    def __init__(
        self, run: RunDir, scene: Scene, device: torch.device | str = "cpu", options: ViewerOptions = ViewerOptions()
    ) -> None:
        self.run, self.scene, self.options = run, scene, options
        self.frames = FrameRenderer(run, scene, torch.device(device))
        self.models = available_models(run)
        if not self.models:
            raise RunError(f"{run.root}: nothing to view (no trained student or teacher); run `kilonerf train` first")
        model = options.model or self.models[0]
        if model not in self.models:
            raise RunError(f"{run.root}: no trained {model} (have: {', '.join(self.models)})")
        height = options.height or int(np.clip(scene.image_size(0)[0], 64, 800))
        self.initial = RenderSettings(model=model, height=height)
        self.loop = RenderLoop(self.frames, PreviewSizer(options.budget_s), options.settle_s)
        self.server: viser.ViserServer | None = None
        self._tabs: dict[int, _Tab] = {}
        self._tabs_lock = threading.Lock()

    def start(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        """Serve on ``host``:``port`` (port 0: any free port; a busy port: the next free one)."""
        if "student" in self.models:
            self.frames.student()  # load before the first tab, so its first frame is quick
        with _quiet():
            server = viser.ViserServer(host=host, port=port, label="kilonerf", verbose=False)
        up = scene_up(self.scene)
        server.scene.set_up_direction(tuple(up))
        position, look_at, fov = home_view(self.scene)
        server.initial_camera.position = tuple(position)
        server.initial_camera.look_at = tuple(look_at)
        server.initial_camera.up = tuple(up)
        server.initial_camera.fov = fov
        server.on_client_connect(self._connect)
        server.on_client_disconnect(self._disconnect)
        self.server = server
        self.loop.start()

    @property
    def host(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.get_host()

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return self.server.get_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def clients(self) -> dict[int, viser.ClientHandle]:
        """Connected tabs by client id."""
        with self._tabs_lock:
            return {key: tab.client for key, tab in self._tabs.items()}

    def stop(self) -> None:
        """Stop rendering and serving; safe to call more than once."""
        self.loop.stop()
        if self.server is not None:
            with _quiet():
                self.server.stop()
            self.server = None

    def _connect(self, client: viser.ClientHandle) -> None:
        key = client.client_id
        opts = self.options
        student = self.frames.student() if "student" in self.models else None
        overlays = add_overlays(
            client.scene, self.scene,
            student.student.bbox.cpu().numpy() if student is not None else None,
            student.student.res if student is not None else None,
            opts.cameras, opts.box, opts.grid,
        )  # fmt: skip
        controls = add_controls(client.gui, self.models, self.initial, opts.cameras, opts.box, opts.grid,
                                True if overlays.points is not None else None)  # fmt: skip
        tab = _Tab(client=client, controls=controls, overlays=overlays)
        with self._tabs_lock:
            self._tabs[key] = tab
        self.loop.attach(key, lambda frame: self._deliver(tab, frame), lambda msg: self._report(tab, msg), self.initial)

        def settings_changed(_: object) -> None:
            controls.sync_enabled()
            self.loop.update(key, **vars(controls.settings()))

        for handle in (controls.model, controls.height, controls.ert_threshold, controls.skip_empty,
                       controls.samples_per_pass):
            handle.on_update(settings_changed)

        def overlays_changed(_: object) -> None:
            points = bool(controls.points.value) if controls.points is not None else False
            overlays.show(controls.cameras.value, controls.box.value, controls.grid.value, points)

        for handle in (controls.cameras, controls.box, controls.grid, controls.points):
            if handle is not None:
                handle.on_update(overlays_changed)

        def camera_moved(cam: viser.CameraHandle) -> None:
            # A hidden or collapsed page can report a zero-height canvas.
            aspect = cam.image_width / cam.image_height if cam.image_height > 0 else 1.0
            self.loop.update(key, from_opencv(cam.wxyz, cam.position, cam.fov, aspect))

        client.camera.on_update(camera_moved)
        # viser connects a client on its first camera message and may run that message's
        # camera callbacks before this (threaded) connect callback has registered ours.
        camera_moved(client.camera)

    def _disconnect(self, client: viser.ClientHandle) -> None:
        self.loop.detach(client.client_id)
        with self._tabs_lock:
            self._tabs.pop(client.client_id, None)

    def _deliver(self, tab: _Tab, frame: Frame) -> None:
        quality = self.options.jpeg_quality[1 if frame.full else 0]
        with tab.lock:
            if tab.client.client_id not in self.clients():
                return
            tab.client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=quality)
            tab.controls.readout.content = readout_text(frame)

    def _report(self, tab: _Tab, message: str) -> None:
        with tab.lock:
            tab.controls.readout.content = f"**error:** {message}"


def _quiet() -> contextlib.AbstractContextManager[object]:
    """viser prints a banner when it starts and a line when it stops, whatever its
    ``verbose``; the CLI prints its own line with the address instead."""
    return contextlib.redirect_stdout(io.StringIO())


def open_viewer(run_path: str | Path, data: str | Path | None = None, device: torch.device | str = "cpu",
                options: ViewerOptions = ViewerOptions()) -> Viewer:  # fmt: skip
    """A (not yet started) :class:`Viewer` of the run at ``run_path``; the scene (for its cameras,
    near/far and background) is the run's own unless ``data`` names another copy of it."""
    run = RunDir(Path(run_path))
    run.read_meta()
    scene = load_run_scene(run, data)
    return Viewer(run, scene, device, options)
