"""The viewer's parts without a server: camera conversions, overlay geometry, preview sizing,
and the render loop's scheduling (previews while moving, full frame once still, cancelling)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

pytest.importorskip("viser")

from kilonerf.data.cameras import look_at  # noqa: E402
from kilonerf.errors import RunError  # noqa: E402
from kilonerf.viewer.adaptive import PreviewSizer  # noqa: E402
from kilonerf.viewer.camera import ViewCamera, from_opencv, opencv_wxyz  # noqa: E402
from kilonerf.viewer.frames import Cancelled, Frame, RenderSettings  # noqa: E402
from kilonerf.viewer.overlays import box_edges, grid_lines  # noqa: E402
from kilonerf.viewer.render_loop import RenderLoop  # noqa: E402


def test_opencv_round_trip_and_rays_look_where_the_camera_looks() -> None:
    c2w = look_at(np.array([3.0, -2.0, 1.5]), np.array([0.2, 0.1, -0.3]))
    cam = from_opencv(opencv_wxyz(c2w), c2w[:3, 3], fov_y=0.8, aspect=2.0)
    np.testing.assert_allclose(cam.c2w, c2w, atol=1e-9)
    assert cam.size(30) == (30, 60)
    origins, dirs = cam.rays(31)  # odd height and width 62: the centre row is exact
    centre = dirs.reshape(31, 62, 3)[15, 30:32].mean(0)
    forward = torch.tensor(-c2w[:3, 2], dtype=torch.float32)
    assert float(torch.dot(centre / centre.norm(), forward)) > 0.9999
    # The top row looks half the vertical field of view above the axis.
    top = dirs.reshape(31, 62, 3)[0, 30:32].mean(0)
    angle = float(torch.arccos(torch.dot(top / top.norm(), forward)))
    assert abs(angle - 0.4 * 30 / 31) < 0.01
    assert torch.allclose(origins, torch.tensor(c2w[:3, 3], dtype=torch.float32).expand_as(origins))


def test_box_edges_and_grid_lines() -> None:
    lo, hi = np.array([-1.0, -2.0, 0.0]), np.array([1.0, 2.0, 0.5])
    edges = box_edges(lo, hi)
    assert edges.shape == (12, 2, 3)
    lengths = np.sort(np.linalg.norm(edges[:, 1] - edges[:, 0], axis=-1))
    np.testing.assert_allclose(lengths, [0.5] * 4 + [2.0] * 4 + [4.0] * 4)
    lines = grid_lines(lo, hi, (2, 4, 1))
    # Per axis, the (n_u + 1)(n_v + 1) lattice lines minus the (n_u - 1)(n_v - 1) interior ones.
    assert lines.shape == (4 * (2 + 4 + 1), 2, 3)
    assert np.all(lines >= lo - 1e-12) and np.all(lines <= hi + 1e-12)
    on_face = np.isclose(lines, lo) | np.isclose(lines, hi)
    assert on_face.all(axis=1).sum(axis=-1).min() >= 2  # the spanned axis and one face
    steps = np.diff(np.unique(lines[..., 1]))
    np.testing.assert_allclose(steps, 1.0)  # the y cells are 4 / 4 wide


def test_overlays_of_a_contracted_scene_are_drawn_in_the_world() -> None:
    from dataclasses import replace

    from kilonerf.data.contraction import ContractionMap
    from kilonerf.data.scene import Scene
    from kilonerf.viewer.overlays import to_world

    poses = np.stack([look_at(np.array([4.0, 0.0, 1.0])), look_at(np.array([-4.0, 0.0, 1.0]))])
    scene = Scene([np.zeros((4, 4, 3), np.uint8)] * 2, np.tile([4.0, 4.0, 2.0, 2.0], (2, 1)), poses,
                  {"train": np.arange(2)}, np.array([[-2.0] * 3, [2.0] * 3]), 0.0, 3.5)  # fmt: skip
    edges = box_edges(scene.bbox[0], scene.bbox[1])
    np.testing.assert_array_equal(to_world(scene, edges), edges)  # object: the box itself
    mapped = replace(scene, ray_map=ContractionMap(np.array([1.0, 0.0, 0.0]), np.array([0.5, 1.0, 2.0]), 0.0))
    world = to_world(mapped, edges, pieces=4).reshape(-1, 3)
    # The contracted box's finite part is the foreground box, drawn around its world centre.
    np.testing.assert_allclose(world.min(0), [0.5, -1.0, -2.0])
    np.testing.assert_allclose(world.max(0), [1.5, 1.0, 2.0])


def test_preview_sizer_follows_the_measured_time() -> None:
    sizer = PreviewSizer(budget_s=0.05, start_height=64, min_height=16)
    assert sizer.height("student", 200) == 64
    sizer.record("student", 64, 0.2)  # 4x over budget: shrink, at most by 1.4 per frame
    assert sizer.height("student", 200) == round(64 / 1.4)
    for _ in range(20):
        sizer.record("student", sizer.height("student", 200), 0.01)
    assert sizer.height("student", 200) == 200  # never above the full frame
    assert sizer.height("teacher", 200) == 64  # per model
    for _ in range(20):
        sizer.record("teacher", sizer.height("teacher", 200), 5.0)
    assert sizer.height("teacher", 200) == 16


class FakeSource:
    """Records render calls; each takes ``seconds`` per 40 x 40 pixels (checking ``cancelled``
    every 5 ms)."""

    def __init__(self, seconds: float = 0.01, fail: Exception | None = None) -> None:
        self.seconds, self.fail = seconds, fail
        self.calls: list[tuple[int, bool]] = []
        self.cancelled = 0

    def render(self, camera: ViewCamera, settings: RenderSettings, height: int, full: bool,
               cancelled: Callable[[], bool]) -> Frame:  # fmt: skip
        self.calls.append((height, full))
        if self.fail is not None:
            raise self.fail
        h, w = camera.size(height)
        took = self.seconds * h * w / 1600
        end = time.monotonic() + took
        while time.monotonic() < end:
            if cancelled():
                self.cancelled += 1
                raise Cancelled
            time.sleep(0.005)
        return Frame(np.zeros((h, w, 3), np.uint8), took, 1.0, full, settings.model)


def camera(x: float) -> ViewCamera:
    return ViewCamera(c2w=look_at(np.array([4.0, x, 1.0])), fov_y=0.7, aspect=1.0)


def run_loop(source: FakeSource, settle_s: float = 0.1) -> tuple[RenderLoop, list[Frame], list[str]]:
    loop = RenderLoop(source, PreviewSizer(budget_s=0.05, start_height=24), settle_s=settle_s)
    frames: list[Frame] = []
    errors: list[str] = []
    loop.attach(1, frames.append, errors.append, RenderSettings(height=64))
    loop.start()
    return loop, frames, errors


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_previews_while_moving_then_one_full_frame() -> None:
    source = FakeSource(seconds=0.05)  # the budget is met at 40 x 40 pixels
    loop, frames, _ = run_loop(source)
    try:
        for i in range(50):  # moving: updates every 20 ms, well within settle_s
            loop.update(1, camera(0.01 * i))
            time.sleep(0.02)
        wait_for(lambda: any(f.full for f in frames))
        time.sleep(0.2)  # nothing more to do once the full frame is out
        previews = [f for f in frames if not f.full]
        assert len(previews) >= 5 and all(f.image.shape[0] < 64 for f in previews)
        assert previews[0].image.shape[0] == 24 and 30 <= previews[-1].image.shape[0] <= 52
        assert [f.full for f in frames].count(True) == 1 and frames[-1].full
        assert frames[-1].image.shape == (64, 64, 3)
        assert loop.frames_sent(1) == {"preview": len(previews), "full": 1}
        loop.update(1, ert_threshold=0.05)  # a settings change renders again
        wait_for(lambda: loop.frames_sent(1)["full"] == 2)
    finally:
        loop.stop()
    assert not loop.running


def test_full_frame_is_abandoned_when_the_camera_moves() -> None:
    source = FakeSource(seconds=0.1)  # 0.26 s at full resolution
    loop, frames, _ = run_loop(source, settle_s=0.05)
    try:
        loop.update(1, camera(0.0))
        wait_for(lambda: (64, True) in source.calls)  # the full render started
        loop.update(1, camera(0.5))
        wait_for(lambda: source.cancelled == 1)
        wait_for(lambda: loop.frames_sent(1)["full"] == 1)
    finally:
        loop.stop()
    assert frames[-1].full and source.cancelled == 1


def test_full_size_previews_keep_coming_while_the_camera_moves() -> None:
    # Renders fast enough for full-size previews (64 x 64 in 0.04 s, within the 0.05 s budget)
    # but slower than the 20 ms between camera updates: each must still be delivered.
    source = FakeSource(seconds=0.015)
    loop, frames, _ = run_loop(source, settle_s=0.5)
    try:
        for i in range(60):
            loop.update(1, camera(0.01 * i))
            time.sleep(0.02)
        assert source.cancelled == 0
        assert sum(f.image.shape[0] == 64 for f in frames) >= 5
    finally:
        loop.stop()


def test_errors_are_reported_and_the_loop_survives_a_closed_tab() -> None:
    source = FakeSource(fail=RunError("teacher checkpoint missing"))
    loop, frames, errors = run_loop(source)
    try:
        loop.update(1, camera(0.0))
        wait_for(lambda: errors == ["teacher checkpoint missing"])
        time.sleep(0.2)
        assert len(source.calls) == 1  # a failed view is not retried until it changes
        source.fail = None

        def broken_deliver(frame: Frame) -> None:
            raise ConnectionError("tab closed")

        loop.attach(2, broken_deliver, errors.append, RenderSettings(height=32))
        loop.update(2, camera(1.0))
        loop.update(1, camera(0.3))
        wait_for(lambda: loop.frames_sent(1)["full"] == 1 and loop.frames_sent(2)["full"] == 1)
        loop.detach(2)
        assert loop.tabs() == [1] and loop.running
    finally:
        loop.stop()


def test_frame_renderer_student_stats(tmp_path) -> None:  # noqa: ANN001
    from tests.helpers.runs import write_sphere_run

    from kilonerf.viewer.app import open_viewer
    from kilonerf.viewer.camera import orbit

    viewer = open_viewer(write_sphere_run(tmp_path))
    assert viewer.models == ["student"]
    cam = ViewCamera(c2w=orbit(viewer.scene, 0.0)[0], fov_y=0.6, aspect=1.5)
    fast = viewer.frames.render(cam, RenderSettings(height=24), 24, True)
    assert fast.image.shape == (24, 36, 3) and fast.image.dtype == np.uint8
    assert fast.samples_per_ray is not None and fast.samples_per_ray > 0
    # Without skipping or early termination the renderer evaluates more samples for the same view.
    slow = viewer.frames.render(cam, RenderSettings(height=24, ert_threshold=0.0, skip_empty=False), 24, True)
    assert slow.samples_per_ray is not None and slow.samples_per_ray > 2 * fast.samples_per_ray
    # The ball (mid-grey) covers the middle of the frame, the white background the corners.
    assert fast.image[12, 18].max() < 200 and fast.image[0, 0].min() > 240
    with pytest.raises(RunError, match="teacher"):
        viewer.frames.render(cam, RenderSettings(model="teacher", height=8), 8, True)
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        viewer.frames.render(cam, RenderSettings(height=8), 8, True, cancelled=flag.is_set)
