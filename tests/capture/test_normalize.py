"""The pure geometry of `kilonerf process`: Umeyama, the normalising transform, scene-type guess, box."""

from __future__ import annotations

import numpy as np
import pytest

from kilonerf.capture.normalize import (CAMERA_DISTANCE, WorldTransform, fit_box, guess_scene_type,
                                        normalizing_transform, pose_errors, rotation_between, umeyama)  # fmt: skip
from kilonerf.data.cameras import look_at
from kilonerf.data.procedural import camera_poses
from kilonerf.data.scene_types import look_at_point


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("seed", range(5))
def test_umeyama_recovers_a_random_similarity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = WorldTransform(random_rotation(rng), rng.normal(size=3) * 3, float(rng.uniform(0.1, 10)))
    src = rng.normal(size=(20, 3))
    found = umeyama(src, truth.apply_points(src))
    np.testing.assert_allclose(found.rotation, truth.rotation, atol=1e-9)
    np.testing.assert_allclose(found.scale, truth.scale, rtol=1e-9)
    np.testing.assert_allclose(found.translation, truth.translation, atol=1e-9)


def test_umeyama_never_returns_a_reflection() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    found = umeyama(src, src * np.array([1.0, 1.0, -1.0]))  # a mirror image: no rotation gives it
    assert np.linalg.det(found.rotation) == pytest.approx(1.0)


def test_rotation_between_maps_one_vector_to_another() -> None:
    rng = np.random.default_rng(1)
    for a, b in [(rng.normal(size=3), rng.normal(size=3)), (np.array([0, 0, -1.0]), np.array([0, 0, 1.0]))]:
        rot = rotation_between(a, b)
        np.testing.assert_allclose(rot @ (a / np.linalg.norm(a)), b / np.linalg.norm(b), atol=1e-12)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)


def test_normalizing_undoes_an_arbitrary_world_and_maps_back() -> None:
    """Cameras around the origin (up +z, 4 away) seen in a rotated, shifted, scaled world come
    back to up +z, look-at at the origin, median distance 4; the recorded transform maps back."""
    rng = np.random.default_rng(2)
    truth = camera_poses(30, 4.0, rng, (5.0, 50.0))
    scramble = WorldTransform(random_rotation(rng), rng.normal(size=3) * 5, 0.37)
    seen = scramble.apply_poses(truth)
    transform = normalizing_transform(seen)
    back = transform.apply_poses(seen)
    up = back[:, :3, 1].sum(0)
    assert np.degrees(np.arccos(up[2] / np.linalg.norm(up))) < 1e-6
    np.testing.assert_allclose(look_at_point(back), 0.0, atol=1e-9)
    assert np.median(np.linalg.norm(back[:, :3, 3], axis=1)) == pytest.approx(CAMERA_DISTANCE)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", back[:, :3, :3], back[:, :3, :3]), np.eye(3)[None].repeat(30, 0),
                               atol=1e-12)  # still rotations
    np.testing.assert_allclose(transform.invert_points(back[:, :3, 3]), seen[:, :3, 3], atol=1e-9)
    homog = np.c_[seen[:, :3, 3], np.ones(30)] @ transform.matrix().T
    np.testing.assert_allclose(homog[:, :3], back[:, :3, 3], atol=1e-9)
    # Same cameras up to a rotation about z: the true ones, aligned, agree exactly.
    rot, pos, _ = pose_errors(back, truth)
    assert rot.max() < 1e-6 and pos.max() < 1e-9


def test_scene_type_guess() -> None:
    rng = np.random.default_rng(3)
    around = camera_poses(40, 4.0, rng, (5.0, 50.0))
    blob = rng.normal(size=(2000, 3)) * 0.3
    far = rng.normal(size=(2000, 3)) * 8.0
    assert guess_scene_type(around, blob)[0] == "object"
    assert guess_scene_type(around, np.concatenate([blob, far]))[0] == "unbounded"
    half = around[np.arctan2(around[:, 1, 3], around[:, 0, 3]) > 0]  # cameras on one side only
    assert guess_scene_type(half, blob)[0] == "unbounded"
    forward = np.stack([look_at(np.array([x, -4.0, 0.0]), np.array([x * 0.5, 0.0, 0.0])) for x in np.linspace(-1, 1, 9)])
    assert guess_scene_type(forward, blob + np.array([0.0, 1.0, 0.0]))[0] == "forward"


def test_box_is_robust_to_stray_points() -> None:
    rng = np.random.default_rng(4)
    poses = camera_poses(30, 4.0, rng, (5.0, 50.0))
    cube = rng.uniform(-1.0, 1.0, size=(5000, 3))
    strays = rng.normal(size=(20, 3)) * 50.0
    box = fit_box(np.concatenate([cube, strays]), poses, "object")
    assert np.all(box[0] < -0.9) and np.all(box[0] > -1.3) and np.all(box[1] > 0.9) and np.all(box[1] < 1.3)
    ground = np.c_[rng.uniform(-20, 20, size=(5000, 2)), np.zeros(5000)]
    fg = fit_box(np.concatenate([cube, ground]), poses, "unbounded")
    assert np.all(np.abs(fg) < 4.5)  # the foreground only: the far ground is contracted
    assert fit_box(cube, poses, "forward") is None
