"""The sparse points of a processed capture in the report (a figure) and the viewer (an overlay)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from kilonerf.data.points import write_points
from kilonerf.data.procedural import camera_poses, write_procedural_scene
from kilonerf.report.capture import plot_capture


def _points(folder: Path, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pts, cols = rng.normal(size=(n, 3)) * 0.5, rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    write_points(folder / "points.ply", pts, cols)
    return pts, cols


def test_report_figure_of_cameras_and_points(tmp_path: Path) -> None:
    poses = camera_poses(12, 4.0, 0, (5.0, 50.0))
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": [{"file_path": f"images/{i}.png",
                                                          "transform_matrix": p.tolist()} for i, p in enumerate(poses)]}))
    assert not plot_capture(tmp_path, tmp_path / "fig.png")  # no points.ply: no figure
    _points(tmp_path)
    assert plot_capture(tmp_path, tmp_path / "fig.png")
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "fig.png").convert("RGB"))
    assert image.shape[0] > 300 and (image < 200).any()  # something drawn


def test_viewer_overlay_of_the_points(tmp_path: Path) -> None:
    viser = pytest.importorskip("viser")
    from kilonerf.data.load import load_scene
    from kilonerf.viewer.overlays import add_overlays, scene_points

    folder = write_procedural_scene(tmp_path / "scene", size=16, n_train=3, n_val=1, n_test=1)
    scene = load_scene(folder)
    assert scene_points(scene) is None
    pts, cols = _points(folder)
    got = scene_points(scene)
    assert got is not None
    np.testing.assert_allclose(got[0], pts, atol=1e-6)
    with contextlib.redirect_stdout(io.StringIO()):
        server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        overlays = add_overlays(server.scene, scene, None, None, cameras=True, box=True, grid=False)
        assert overlays.points is not None and overlays.points.visible
        overlays.show(True, True, False, points=False)
        assert not overlays.points.visible
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            server.stop()
