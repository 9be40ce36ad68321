"""The web viewer end to end: a headless Chromium sees the scene and follows the camera,
clients come and go without harming the server, and `kilonerf view` stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("viser")

from kilonerf.viewer.app import Viewer, ViewerOptions, open_viewer  # noqa: E402
from kilonerf.viewer.browser import (  # noqa: E402
    chromium_missing, foreground_fraction, headless_chromium, render_area, screenshot, wait_for_full_frame, wait_until,
)  # fmt: skip
from kilonerf.viewer.camera import opencv_wxyz, orbit, scene_up  # noqa: E402

from tests.helpers.runs import write_sphere_run  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sphere_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sphere_run(tmp_path_factory.mktemp("viewer"))


@pytest.fixture
def viewer(sphere_run: Path) -> Iterator[Viewer]:
    before = set(threading.enumerate())
    v = open_viewer(sphere_run, options=ViewerOptions(height=48, cameras=False))
    v.start("127.0.0.1", 0)
    try:
        yield v
    finally:
        v.stop()
    assert not v.loop.running
    wait_until(lambda: set(threading.enumerate()) <= before, 10, "the viewer's threads to end")


def http_get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read()


@pytest.mark.browser
def test_browser_sees_the_scene_and_follows_the_camera(viewer: Viewer) -> None:
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    assert viewer.host == "127.0.0.1"
    bg = viewer.scene.background
    with headless_chromium() as driver:
        driver.get(viewer.url)
        key = wait_for_full_frame(viewer, 60)

        def scene_shown() -> np.ndarray | None:
            shot = render_area(screenshot(driver))
            return shot if foreground_fraction(shot, bg) > 0.04 else None

        first = wait_until(lambda: (s := scene_shown()) is not None and (s,), 15, "the render in the page")[0]
        full_before = viewer.loop.frames_sent(key)["full"]
        # Move through the server's handle on this browser's camera: the page must report the
        # new camera back, and the next frame must arrive and show a different view.
        c2w, centre = orbit(viewer.scene, np.pi / 2, distance_scale=0.75)
        camera = viewer.clients()[key].camera
        camera.up_direction = tuple(scene_up(viewer.scene))
        camera.position = tuple(c2w[:3, 3])
        camera.look_at = tuple(centre)
        wait_for_full_frame(viewer, 30, after=full_before)

        def changed() -> bool:
            shot = render_area(screenshot(driver))
            moved = (np.abs(shot.astype(int) - first.astype(int)).max(axis=-1) > 24).mean()
            return moved > 0.03 and foreground_fraction(shot, bg) > 0.04

        wait_until(changed, 15, "a different frame after moving the camera")


def camera_message(viewer: Viewer, angle: float) -> bytes:
    """What a browser sends when its camera moves: viser's camera message, msgpack-encoded."""
    import msgspec
    from viser._messages import ViewerCameraMessage

    c2w, centre = orbit(viewer.scene, angle)
    msg = ViewerCameraMessage(
        wxyz=tuple(opencv_wxyz(c2w)), position=tuple(c2w[:3, 3]), fov=0.7, near=0.01, far=100.0,
        image_height=240, image_width=320, look_at=tuple(centre), up_direction=tuple(scene_up(viewer.scene)),
    )  # fmt: skip
    return msgspec.msgpack.encode(msg.as_serializable_dict())


def test_twenty_clients_connect_and_drop(viewer: Viewer) -> None:
    import viser
    from websockets.sync.client import connect

    ws_url = viewer.url.replace("http://", "ws://")
    protocol = f"viser-v{viser.__version__}"
    for i in range(20):
        ws = connect(ws_url, subprotocols=[protocol], open_timeout=10)  # type: ignore[list-item]
        ws.send(camera_message(viewer, 0.1 * i))  # viser counts a client once it reports its camera
        wait_until(lambda: viewer.loop.tabs(), 10, f"client {i} to be registered")
        if i % 2:
            ws.close()
        else:  # dropped without a closing handshake, as when a tab's process dies
            ws.socket.shutdown(socket.SHUT_RDWR)
            ws.close()
        wait_until(lambda: not viewer.clients() and not viewer.loop.tabs(), 10, f"client {i} to be dropped")
    status, body = http_get(viewer.url)
    assert status == 200 and b"<html" in body.lower()
    assert viewer.loop.running
    # Two clients at once still each get their own frames, and one leaving spares the other.
    with connect(ws_url, subprotocols=[protocol], open_timeout=10) as a:  # type: ignore[list-item]
        with connect(ws_url, subprotocols=[protocol], open_timeout=10) as b:  # type: ignore[list-item]
            a.send(camera_message(viewer, 1.0))
            b.send(camera_message(viewer, 2.0))
            wait_until(lambda: len(viewer.loop.tabs()) == 2 and all(
                viewer.loop.frames_sent(k)["full"] for k in viewer.loop.tabs()), 30, "a frame for both clients")
        wait_until(lambda: len(viewer.loop.tabs()) == 1, 10, "the second client to leave")
        (key,) = viewer.loop.tabs()
        a.send(camera_message(viewer, 1.5))
        wait_until(lambda: viewer.loop.frames_sent(key)["full"] >= 2, 30, "a new frame for the first client")


def test_cli_view_serves_on_localhost_and_stops_on_ctrl_c(sphere_run: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kilonerf.cli", "view", str(sphere_run), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
        url = line[line.index("http://") :].split()[0]
        assert http_get(url)[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopping" in out


@pytest.mark.parametrize(
    "extra, message",
    [([], "not found"), (["--port", "70000"], "--port"), (["--height", "0"], "--height")],
)
def test_cli_view_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    from kilonerf.cli import main

    assert main(["view", str(tmp_path / "nope"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
