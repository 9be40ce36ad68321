"""Lens distortion (radial-tangential, as instant-ngp records it): the model against OpenCV,
undistorted photos against OpenCV's ``undistort``, and the instant-ngp loader using it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kilonerf.data.distortion import distort, undistort_image
from kilonerf.data.load import load_scene
from kilonerf.errors import SceneError
from tests.helpers.scenes import make_blender, make_ngp_from_blender

cv2 = pytest.importorskip("cv2")
COEFFS = np.array([-0.12, 0.04, -0.01, 0.002, -0.003])  # k1 k2 k3 p1 p2
INTR = np.array([60.0, 62.0, 41.0, 30.5])  # fx fy cx cy, pixel centres at +0.5


def _cv_camera() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's camera matrix (pixel centres at integers) and its coefficient order k1 k2 p1 p2 k3."""
    fx, fy, cx, cy = INTR
    k = np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]])
    return k, np.array([COEFFS[0], COEFFS[1], COEFFS[3], COEFFS[4], COEFFS[2]])


def test_model_matches_opencv_on_random_pixels() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.7, 0.7, 500), rng.uniform(-0.5, 0.5, 500)
    xd, yd = distort(x, y, COEFFS)
    k, dist = _cv_camera()
    projected, _ = cv2.projectPoints(np.stack([x, y, np.ones_like(x)], 1)[:, None], np.zeros(3), np.zeros(3), k, dist)
    np.testing.assert_allclose(projected[:, 0, 0], xd * k[0, 0] + k[0, 2], atol=1e-6)
    np.testing.assert_allclose(projected[:, 0, 1], yd * k[1, 1] + k[1, 2], atol=1e-6)
    # OpenCV's undistortPoints inverts the model: distorted pixels go back to where they came from.
    pix = np.stack([xd * k[0, 0] + k[0, 2], yd * k[1, 1] + k[1, 2]], 1)[:, None]
    back = cv2.undistortPoints(pix, k, dist, criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12))
    np.testing.assert_allclose(back[:, 0, 0], x, atol=1e-6)
    np.testing.assert_allclose(back[:, 0, 1], y, atol=1e-6)


def test_undistorted_photo_matches_opencv() -> None:
    rng = np.random.default_rng(1)
    # A smooth photo, so bilinear sampling differences stay below a grey level.
    small = rng.integers(0, 256, (8, 10, 3)).astype(np.uint8)
    photo = cv2.resize(small, (82, 61), interpolation=cv2.INTER_CUBIC)
    ours = undistort_image(photo, INTR, COEFFS)
    k, dist = _cv_camera()
    theirs = cv2.undistort(photo, k, dist)
    inner = (slice(4, -4), slice(4, -4))  # OpenCV treats the last pixel row and column differently
    diff = np.abs(ours[inner].astype(int) - theirs[inner].astype(int))
    assert diff.mean() < 0.6 and diff.max() <= 3
    assert np.abs(ours.astype(int) - photo.astype(int)).mean() > 3  # the photo really changed
    assert np.array_equal(undistort_image(photo, INTR, np.zeros(5)), photo)


def test_ngp_loader_undistorts_and_refuses_fisheye(tmp_path: Path) -> None:
    blender = make_blender(tmp_path / "b", size=(100, 100))
    json_path, meta = make_ngp_from_blender(blender, tmp_path / "ngp", 3)
    root = json_path.parent
    plain = load_scene(root, scene_type="object")
    json_path.write_text(json.dumps({**meta, "k1": -0.2, "p1": 0.01}))
    bent = load_scene(root, scene_type="object")
    assert [im.shape for im in bent.images] == [im.shape for im in plain.images]
    assert any(not np.array_equal(a, b) for a, b in zip(bent.images, plain.images))
    frames = [dict(f) for f in meta["frames"]]
    frames[1]["k1"] = "strong"
    json_path.write_text(json.dumps({**meta, "frames": frames}))
    with pytest.raises(SceneError, match="frame 1: 'k1' must be a finite number"):
        load_scene(root)
    json_path.write_text(json.dumps({**meta, "k4": 0.1, "is_fisheye": True}))
    with pytest.raises(SceneError, match="is not supported; undistort the photos first"):
        load_scene(root)


def test_colmap_camera_models() -> None:
    from kilonerf.data.distortion import colmap_camera

    intr, coeffs = colmap_camera("SIMPLE_RADIAL", [500.0, 320.0, 240.0, -0.1], "cameras.bin")
    np.testing.assert_array_equal(intr, [500.0, 500.0, 320.0, 240.0])
    np.testing.assert_array_equal(coeffs, [-0.1, 0.0, 0.0, 0.0, 0.0])
    intr, coeffs = colmap_camera("OPENCV", [500.0, 510.0, 320.0, 240.0, -0.1, 0.02, 1e-3, -2e-3], "cameras.bin")
    np.testing.assert_array_equal(intr, [500.0, 510.0, 320.0, 240.0])
    np.testing.assert_array_equal(coeffs, [-0.1, 0.02, 0.0, 1e-3, -2e-3])  # k1 k2 k3 p1 p2
    assert colmap_camera("PINHOLE", [500.0, 510.0, 320.0, 240.0], "c")[1] is None
    with pytest.raises(SceneError, match="camera model 'OPENCV_FISHEYE' is not supported"):
        colmap_camera("OPENCV_FISHEYE", [1.0] * 8, "c")
    with pytest.raises(SceneError, match="'RADIAL' needs 5 finite parameters"):
        colmap_camera("RADIAL", [1.0, 2.0], "c")
