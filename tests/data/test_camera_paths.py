"""Camera paths: generated orbit and spiral, the test split's cameras, the JSON format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kilonerf.data.camera_paths import (
    CameraPath, load_camera_path, make_camera_path, orbit_path, save_camera_path, spiral_path,
)  # fmt: skip
from kilonerf.data.cameras import camera_rays, look_at
from kilonerf.data.scene import Scene
from kilonerf.errors import KiloNerfError, SceneError
from tests.helpers.scenes import ring_poses


def _scene(poses: np.ndarray, size: tuple[int, int] = (6, 8), test: int = 2) -> Scene:
    """A scene with the given training cameras (plus ``test`` ring cameras) and box [0, 2]^3."""
    h, w = size
    all_poses = np.concatenate([poses, ring_poses(test)]) if test else poses
    n = len(all_poses)
    return Scene(
        images=[np.zeros((h, w, 3), np.uint8)] * n,
        intrinsics=np.tile([10.0, 11.0, 0.5 * w, 0.5 * h], (n, 1)),
        poses=all_poses,
        splits={"train": np.arange(len(poses)), **({"test": np.arange(len(poses), n)} if test else {})},
        bbox=np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]),
        near=0.5,
        far=8.0,
    )


def _hemisphere(n: int, seed: int = 0) -> np.ndarray:
    """Cameras at distance 4 from the box centre (1, 1, 1), above it, looking at it (z up)."""
    rng = np.random.default_rng(seed)
    az, el = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.2, 1.2, n)
    eyes = 4.0 * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1) + 1.0
    return np.stack([look_at(e, np.ones(3)) for e in eyes])


def _looks_at(path: CameraPath, target: np.ndarray) -> np.ndarray:
    """Cosine between each camera's viewing direction (-z) and the direction to ``target``."""
    to_target = target - path.poses[:, :3, 3]
    to_target /= np.linalg.norm(to_target, axis=1, keepdims=True)
    return np.einsum("ni,ni->n", -path.poses[:, :3, 2], to_target)


def test_orbit_circles_the_box_centre_at_the_cameras_median_radius_and_height() -> None:
    poses = _hemisphere(30)
    path = orbit_path(_scene(poses), frames=12)
    centre = np.ones(3)
    eyes = path.poses[:, :3, 3] - centre
    offsets = poses[:, :3, 3] - centre
    up = poses[:, :3, 1].mean(0)
    up /= np.linalg.norm(up)
    heights = eyes @ up
    radii = np.linalg.norm(eyes - heights[:, None] * up, axis=1)
    train_heights = offsets @ up
    train_radii = np.linalg.norm(offsets - train_heights[:, None] * up, axis=1)
    assert np.allclose(heights, np.median(train_heights)) and np.allclose(radii, np.median(train_radii))
    assert np.allclose(_looks_at(path, centre), 1.0)
    # Evenly spaced over one full turn: equal steps, and the step after the last closes the circle.
    steps = np.linalg.norm(np.diff(np.concatenate([eyes, eyes[:1]]), axis=0), axis=1)
    assert np.allclose(steps, steps[0])
    assert len(path) == 12 and (path.width, path.height) == (8, 6) and np.allclose(path.intrinsics, [10, 11, 4, 3])
    for pose in path.poses:  # proper camera frames: orthonormal, right-handed
        assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3)) and np.isclose(np.linalg.det(pose[:3, :3]), 1.0)


def test_spiral_looks_at_the_box_centre_and_moves_around_the_mean_camera() -> None:
    poses = ring_poses(10, radius=4.0, height=1.0)[:4]  # a quarter ring: a forward-facing capture
    path = spiral_path(_scene(poses), frames=40)
    assert np.allclose(_looks_at(path, np.ones(3)), 1.0)
    eyes = path.poses[:, :3, 3]
    spread = np.linalg.norm(eyes - poses[:, :3, 3].mean(0), axis=1)
    assert spread.min() > 0.05 and spread.max() < 2 * np.linalg.norm(poses[:, :3, 3].std(0)) + 1.0
    assert (np.linalg.norm(np.diff(eyes, axis=0), axis=1) > 1e-3).all()  # it moves every frame


def test_spiral_survives_cameras_all_around_and_above() -> None:
    """The mean camera sits above the centre here (a degenerate 'facing' direction)."""
    path = spiral_path(_scene(_hemisphere(40, seed=1)), frames=16)
    assert np.isfinite(path.poses).all() and np.allclose(_looks_at(path, np.ones(3)), 1.0)


def test_resized_keeps_every_ray() -> None:
    """Rescaling changes only the pixel grid: the ray through the same relative image
    position is the same."""
    big = make_camera_path("orbit", _scene(_hemisphere(5)), frames=3, width=20)
    small = make_camera_path("orbit", _scene(_hemisphere(5)), frames=3)
    assert (big.width, big.height) == (20, 15) and (small.width, small.height) == (8, 6)
    assert np.array_equal(big.poses, small.poses)
    rel = torch.tensor([[0.5, 0.5], [0.1, 0.9], [1.0, 0.0]], dtype=torch.float64)
    for k in range(3):
        pose = torch.as_tensor(small.poses[k])
        _, d_small = camera_rays(pose, torch.as_tensor(small.intrinsics[k]), rel * torch.tensor([8.0, 6.0]))
        _, d_big = camera_rays(pose, torch.as_tensor(big.intrinsics[k]), rel * torch.tensor([20.0, 15.0]))
        assert torch.allclose(d_small, d_big, atol=1e-9)


def test_test_path_is_the_test_split_and_frames_cut_it() -> None:
    scene = _scene(_hemisphere(5), test=3)
    path = make_camera_path("test", scene)
    assert np.array_equal(path.poses, scene.poses[5:]) and len(make_camera_path("test", scene, frames=2)) == 2
    with pytest.raises(SceneError, match="no 'test' split"):
        make_camera_path("test", _scene(_hemisphere(5), test=0))
    with pytest.raises(KiloNerfError, match="frame count"):
        make_camera_path("orbit", scene, frames=0)


def test_json_round_trip(tmp_path: Path) -> None:
    path = make_camera_path("spiral", _scene(_hemisphere(8)), frames=5, width=30)
    file = tmp_path / "path.json"
    save_camera_path(path, file)
    back = load_camera_path(file)
    assert (back.width, back.height) == (path.width, path.height)
    assert np.array_equal(back.poses, path.poses) and np.array_equal(back.intrinsics, path.intrinsics)
    assert make_camera_path(str(file), _scene(_hemisphere(2)), frames=2).poses.shape == (2, 4, 4)


def test_json_intrinsics_defaults(tmp_path: Path) -> None:
    """Top-level intrinsics apply to every frame; fy defaults to fx, cx / cy to the centre."""
    file = tmp_path / "p.json"
    frames = [{"transform_matrix": np.eye(4).tolist()}, {"transform_matrix": np.eye(4).tolist(), "fx": 7, "cy": 1.5}]
    file.write_text(json.dumps({"width": 40, "height": 30, "fx": 50.0, "frames": frames}))
    path = load_camera_path(file)
    assert np.allclose(path.intrinsics, [[50, 50, 20, 15], [7, 7, 20, 1.5]])


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"width": 4, "frames": []}', "'height'"),
        ('{"width": true, "height": 4, "frames": []}', "'width'"),
        ('{"width": 4, "height": 4, "frames": []}', "non-empty"),
        ('{"width": 4, "height": 4, "fx": 3, "frames": [{"pose": 1}]}', "frame 0: must be an object"),
        ('{"width": 4, "height": 4, "fx": 3, "frames": [{"transform_matrix": [[1, 0], [0, 1]]}]}', "4 x 4"),
        ('{"width": 4, "height": 4, "frames": [{"transform_matrix": ID}]}', "no 'fx'"),
        ('{"width": 4, "height": 4, "fx": -2, "frames": [{"transform_matrix": ID}]}', "positive"),
        ('{"width": 4, "height": 4, "fx": 2, "frames": [{"transform_matrix": ID, "cx": "a"}]}', "finite number"),
    ],
)
def test_bad_json_is_a_scene_error_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "bad.json"
    file.write_text(content.replace("ID", json.dumps(np.eye(4).tolist())))
    with pytest.raises(SceneError, match=message) as info:
        load_camera_path(file)
    assert info.value.path == file and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="no such camera-path file"):
        make_camera_path(str(tmp_path / "nope.json"), _scene(_hemisphere(2)))


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("### Camera paths", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    (tmp_path / "p.json").write_text(example)
    path = load_camera_path(tmp_path / "p.json")
    assert (path.width, path.height, len(path)) == (400, 300, 2)
    assert np.allclose(path.intrinsics, [[500, 500, 200, 150], [600, 500, 200, 150]])
