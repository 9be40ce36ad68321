"""Bad scene input: every case raises SceneError whose message names the offending file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.scenes import llff_folder, make_blender, make_nsvf, random_image, save_png

from kilonerf.data import SceneError, load_scene


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def expect_error(root: Path, culprit: Path, match: str = "") -> SceneError:
    with pytest.raises(SceneError) as info:
        load_scene(root)
    assert str(culprit) in str(info.value), str(info.value)
    assert match.lower() in str(info.value).lower(), str(info.value)
    return info.value


def png_bytes(tmp_path: Path) -> bytes:
    """A noisy 64 x 64 PNG whose pixel data cannot compress away."""
    path = tmp_path / "noise.png"
    save_png(path, random_image(np.random.default_rng(3), 64, 64, 3))
    return path.read_bytes()


@pytest.fixture
def blender(tmp_path: Path) -> Path:
    return make_blender(tmp_path / "scene")


@pytest.fixture
def nsvf(tmp_path: Path) -> Path:
    return make_nsvf(tmp_path / "scene")


def test_missing_and_unknown_folders(tmp_path: Path) -> None:
    expect_error(tmp_path / "nowhere", tmp_path / "nowhere", "not found")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", tmp_path / "empty", "not a scene folder")


def test_blender_missing_image(blender: Path) -> None:
    (blender / "train" / "r_1.png").unlink()
    expect_error(blender, blender / "train" / "r_1.png", "not found")


def test_blender_malformed_json(blender: Path) -> None:
    path = blender / "transforms_val.json"
    path.write_text('{"camera_angle_x": 0.7, "frames": [')
    expect_error(blender, path, "malformed JSON")
    path.write_text("[1, 2]")
    expect_error(blender, path, "frames")


@pytest.mark.parametrize(
    "matrix, problem",
    [
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4]], "4 x 4"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], "4 x 4"),
        ([[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 4], [0, 0, 0, 1]], "4 x 4"),
        ([[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]], "non-finite"),
        ("identity", "4 x 4"),
    ],
)
def test_blender_bad_pose(blender: Path, matrix: object, problem: str) -> None:
    path = blender / "transforms_train.json"
    edit_json(path, lambda m: m["frames"][1].update(transform_matrix=matrix))
    assert "frame 1" in str(expect_error(blender, path, problem))


def test_blender_missing_pose_and_focal(blender: Path) -> None:
    path = blender / "transforms_train.json"
    edit_json(path, lambda m: m["frames"][0].pop("transform_matrix"))
    expect_error(blender, path, "transform_matrix")
    make_blender(blender.parent / "b2")
    path = blender.parent / "b2" / "transforms_val.json"
    edit_json(path, lambda m: m.pop("camera_angle_x"))
    expect_error(blender.parent / "b2", path, "focal")


@pytest.mark.parametrize("file_path", ["../../etc/passwd", "/etc/passwd", "./train/../../outside/r_0"])
def test_file_path_outside_folder(blender: Path, file_path: str) -> None:
    path = blender / "transforms_train.json"
    edit_json(path, lambda m: m["frames"][2].update(file_path=file_path))
    err = expect_error(blender, path)
    assert file_path in str(err) and ("outside" in str(err) or "absolute" in str(err))


def test_unreadable_and_truncated_images(blender: Path, tmp_path: Path) -> None:
    bad = blender / "val" / "r_1.png"
    bad.write_bytes(b"this is not a png at all")
    expect_error(blender, bad, "not a readable image")
    data = png_bytes(tmp_path)
    bad.write_bytes(data[: len(data) // 2])
    expect_error(blender, bad, "truncated")
    bad.write_bytes(b"")
    expect_error(blender, bad)


def test_mixed_sizes_within_a_split(blender: Path) -> None:
    odd = blender / "train" / "r_2.png"
    save_png(odd, random_image(np.random.default_rng(0), 7, 8))
    expect_error(blender, odd, "one size")
    # Different sizes in different splits are fine.
    for k in range(3):
        save_png(blender / "train" / f"r_{k}.png", random_image(np.random.default_rng(k), 7, 8))
    load_scene(blender)


def test_bad_side_files(blender: Path) -> None:
    (blender / "bbox.txt").write_text("-1 -1 -1 1 1\n")
    expect_error(blender, blender / "bbox.txt", "xmin")
    (blender / "bbox.txt").write_text("1 1 1 -1 -1 -1\n")
    expect_error(blender, blender / "bbox.txt", "min < max")
    (blender / "bbox.txt").unlink()
    (blender / "near_and_far.txt").write_text("6 two\n")
    expect_error(blender, blender / "near_and_far.txt", "line 1")
    (blender / "near_and_far.txt").write_text("6 2\n")
    expect_error(blender, blender / "near_and_far.txt", "near < far")


def test_nsvf_bad_files(nsvf: Path) -> None:
    pose = nsvf / "pose" / "0_0001.txt"
    pose.write_text("1 0 0 0\n0 1 0 0\n0 0 1 4\n")
    expect_error(nsvf, pose, "4 x 4")
    pose.write_text("1 0 0 0\n0 1 0 0\n0 0 1 inf\n0 0 0 1\n")
    expect_error(nsvf, pose, "non-finite")
    pose.unlink()
    expect_error(nsvf, pose, "not found")


def test_nsvf_missing_side_files_and_bad_names(tmp_path: Path) -> None:
    root = make_nsvf(tmp_path / "a")
    (root / "intrinsics.txt").unlink()
    expect_error(root, root / "intrinsics.txt", "not found")
    root = make_nsvf(tmp_path / "b")
    (root / "bbox.txt").unlink()
    expect_error(root, root / "bbox.txt", "not found")
    root = make_nsvf(tmp_path / "c")
    (root / "intrinsics.txt").write_text("0 0\n")
    expect_error(root, root / "intrinsics.txt")
    root = make_nsvf(tmp_path / "d")
    (root / "rgb" / "0_0000.png").rename(root / "rgb" / "train_0000.png")
    expect_error(root, root / "rgb" / "train_0000.png", "0_, 1_ or 2_")
    root = make_nsvf(tmp_path / "e", counts=(3, 0, 0))
    odd = root / "rgb" / "0_0001.png"
    save_png(odd, random_image(np.random.default_rng(0), 6, 9, 3))
    expect_error(root, odd, "one size")


def test_llff_bad_files(tmp_path: Path) -> None:
    root = llff_folder(tmp_path / "l")
    scene = load_scene(root)
    np.testing.assert_allclose(scene.intrinsics[0], [30 * 8 / 32, 30 * 8 / 32, 4, 3])
    npy = root / "poses_bounds.npy"
    good = np.load(npy)
    np.save(npy, good[:, :15])
    expect_error(root, npy, "(N, 17)")
    bad = good.copy()
    bad[1, 3] = np.nan
    np.save(npy, bad)
    expect_error(root, npy, "non-finite")
    npy.write_bytes(b"garbage")
    expect_error(root, npy, "npy")
    np.save(npy, good[:2])
    expect_error(root, root / "images_4", "3 images but")
    np.save(npy, good)
    odd = root / "images_4" / "im2.png"
    save_png(odd, random_image(np.random.default_rng(0), 5, 8, 3))
    expect_error(root, odd, "one size")


def test_ngp_bad_input(tmp_path: Path) -> None:
    root = make_blender(tmp_path / "n", splits={"train": 3})
    meta = json.loads((root / "transforms_train.json").read_text())
    (root / "transforms_train.json").unlink()
    path = root / "transforms.json"
    meta["frames"][1]["file_path"] = "../secret"  # refused, not skipped as missing
    path.write_text(json.dumps(meta))
    expect_error(root, path, "outside")
    meta["frames"][1]["file_path"] = "./train/r_1"
    meta["aabb_scale"] = "big"
    path.write_text(json.dumps(meta))
    expect_error(root, path, "aabb_scale")
    path.write_text("{")
    expect_error(root, path, "malformed JSON")
