"""Scene loaders on the real scenes and on tiny hand-written folders of every format."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers.scenes import make_blender, make_ngp_from_blender, make_nsvf, random_image, save_png

from kilonerf.data import SceneError, detect_format, load_scene
from kilonerf.data.cameras import camera_rays
from kilonerf.data import images as images_module
from kilonerf.data.images import composite_rgba, read_image, write_png
from kilonerf.data.rays import RayTable
from kilonerf.data.scene import Scene


def centre_rays(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Origins and unit directions (N, 3) through each image's principal point."""
    pix = torch.as_tensor(scene.intrinsics[:, 2:], dtype=torch.float64)
    poses = torch.as_tensor(scene.poses)
    o, d = camera_rays(poses, torch.as_tensor(scene.intrinsics), pix)
    return o.numpy(), d.numpy()


def distance_to_origin(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    along = (o * d).sum(-1, keepdims=True)
    return np.linalg.norm(o - along * d, axis=-1)


# ---- Blender -----------------------------------------------------------------------------


def test_lego_100(lego_100: Path) -> None:
    assert detect_format(lego_100) == "blender"
    scene = load_scene(lego_100)
    assert scene.format == "blender" and len(scene) == 200
    assert len(scene.indices("train")) == 100 and len(scene.indices("val")) == 100
    assert all(img.shape == (100, 100, 3) and img.dtype == np.uint8 for img in scene.images)
    np.testing.assert_allclose(scene.intrinsics[:, :2], 138.889, atol=1e-3)
    np.testing.assert_allclose(scene.intrinsics[:, 2:], 50.0)
    assert (scene.near, scene.far) == (2.0, 6.0)
    np.testing.assert_array_equal(scene.bbox, [[-1.5] * 3, [1.5] * 3])
    o, d = centre_rays(scene)
    assert distance_to_origin(o, d).max() < 0.1
    # Compositing onto white, against a float64 reference on the raw RGBA file.
    raw = read_image(lego_100 / "train" / "r_0.png").astype(np.float64)
    a = raw[..., 3:] / 255.0
    ref = np.rint(raw[..., :3] * a + 255.0 * (1 - a)).astype(np.uint8)
    np.testing.assert_array_equal(scene.images[0], ref)
    assert (raw[..., 3] < 255).any()  # the comparison exercised alpha


def test_lego_200_decoded_once_in_parallel_as_uint8(lego_200: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What keeps loading fast, counted rather than timed: every photo is decoded exactly once,
    # by a pool of threads (Pillow decodes without the GIL).
    decoded: list[tuple[str, int]] = []
    original = images_module.read_image

    def counting(path: str | Path) -> np.ndarray:
        decoded.append((Path(path).name, threading.get_ident()))
        return original(path)

    monkeypatch.setattr(images_module, "read_image", counting)
    scene = load_scene(lego_200)
    assert len(scene) == 200 and scene.images[0].shape == (200, 200, 3)
    assert {img.dtype for img in scene.images} == {np.dtype(np.uint8)}
    np.testing.assert_allclose(scene.intrinsics[:, 0], 277.778, atol=1e-3)
    assert len(decoded) == 200 and len({name for name, _ in decoded}) == 100  # train and val share r_N names
    assert len({thread for _, thread in decoded}) > 1


def test_split_selection(lego_100: Path) -> None:
    val = load_scene(lego_100, splits=["val"])
    assert list(val.splits) == ["val"] and len(val) == 100
    with pytest.raises(SceneError, match="transforms_test.json"):
        load_scene(lego_100, splits=["test"])


def test_single_split_folder_and_background(tmp_path: Path) -> None:
    root = make_blender(tmp_path / "s", splits={"test": 2}, with_ext=True)
    scene = load_scene(root, background=(0.0, 0.0, 0.0))
    assert list(scene.splits) == ["test"] and len(scene) == 2
    raw = read_image(root / "test" / "r_0.png").astype(np.float64)
    ref = np.rint(raw[..., :3] * raw[..., 3:] / 255.0).astype(np.uint8)
    np.testing.assert_array_equal(scene.images[0], ref)
    np.testing.assert_array_equal(scene.background, [0, 0, 0])


def test_blender_side_files_and_intrinsic_keys(tmp_path: Path) -> None:
    root = make_blender(tmp_path / "s", splits={"train": 2})
    (root / "bbox.txt").write_text("-1 -2 -3 1 2 3 0.1\n")
    (root / "near_and_far.txt").write_text("0.5 7\n")
    meta = json.loads((root / "transforms_train.json").read_text())
    meta["camera_angle_y"] = 0.5
    meta["frames"][1].update({"fl_x": 9.0, "cx": 3.0, "cy": 2.5})
    (root / "transforms_train.json").write_text(json.dumps(meta))
    scene = load_scene(root)
    np.testing.assert_array_equal(scene.bbox, [[-1, -2, -3], [1, 2, 3]])
    assert (scene.near, scene.far) == (0.5, 7.0)
    fy = 0.5 * 6 / np.tan(0.25)
    np.testing.assert_allclose(scene.intrinsics[0], [4 / np.tan(0.6911112070083618 / 2), fy, 4, 3])
    np.testing.assert_allclose(scene.intrinsics[1], [9.0, fy, 3.0, 2.5])


# ---- LLFF --------------------------------------------------------------------------------


def test_fern_llff(fern_llff: Path) -> None:
    assert detect_format(fern_llff) == "llff"
    scene = load_scene(fern_llff, scene_type="object")  # the loader's world units
    raw = np.load(fern_llff / "poses_bounds.npy")
    mats = raw[:, :15].reshape(-1, 3, 5)
    assert len(scene) == 20 and all(img.shape == (378, 504, 3) for img in scene.images)
    np.testing.assert_array_equal(scene.splits["test"], [0, 8, 16])
    assert len(scene.splits["train"]) == 17
    rot = scene.poses[:, :3, :3]
    np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    # [down, right, backwards] -> [right, up, backwards], checked column by column.
    np.testing.assert_allclose(rot[:, :, 0], mats[:, :, 1])
    np.testing.assert_allclose(rot[:, :, 1], -mats[:, :, 0])
    np.testing.assert_allclose(rot[:, :, 2], mats[:, :, 2])
    np.testing.assert_allclose(scene.intrinsics[:, 0], mats[:, 2, 4] * 504 / 4032)
    np.testing.assert_allclose(scene.intrinsics[:, 2:], np.broadcast_to([252.0, 189.0], (20, 2)))
    assert scene.near == raw[:, 15].min() and scene.far == raw[:, 16].max()
    # Forward-facing: every centre ray points along the mean viewing direction, and the
    # cameras spread in a plane facing it (their least-spread axis is that direction).
    o, d = centre_rays(scene)
    mean_dir = d.mean(0) / np.linalg.norm(d.mean(0))
    assert (d @ mean_dir).min() > 0.95
    least_spread = np.linalg.svd(o - o.mean(0))[2][-1]
    assert abs(least_spread @ mean_dir) > 0.9
    # The box holds the content in front of every camera, between near and far depth.
    for depth in (scene.near, scene.far):
        pts = o - depth * scene.poses[:, :3, 2]
        assert ((pts >= scene.bbox[0] - 1e-9) & (pts <= scene.bbox[1] + 1e-9)).all()
    assert scene.background.tolist() == [0, 0, 0]


# ---- NSVF --------------------------------------------------------------------------------


def test_nsvf_opencv_poses_intrinsics_and_background(tmp_path: Path) -> None:
    root = make_nsvf(tmp_path / "n", counts=(2, 1, 1))
    assert detect_format(root) == "nsvf"
    scene = load_scene(root)
    assert {s: len(i) for s, i in scene.splits.items()} == {"train": 2, "val": 1, "test": 1}
    assert scene.image_names[0] == "0000"
    np.testing.assert_allclose(scene.intrinsics, np.broadcast_to([4.0, 4.0, 4.0, 3.0], (4, 4)))
    o, d = centre_rays(scene)
    assert distance_to_origin(o, d).max() < 1e-9  # ring cameras all look at the origin
    np.testing.assert_allclose((o * d).sum(-1), -np.linalg.norm(o, axis=-1))  # ... forwards
    # Without near_and_far.txt: distances from the cameras to the box.
    cam_dist = np.linalg.norm(o, axis=-1)
    assert scene.near > 0 and scene.far > cam_dist.max()

    # DeepVoxels-style intrinsics, an RGBA image and a 0-255 background colour.
    (root / "intrinsics.txt").write_text("5.0 3.5 2.5 0.\n0. 0. 0.\n1.\n6 8\n")
    (root / "background_color.txt").write_text("0 0 255\n")
    rgba = random_image(np.random.default_rng(1))
    rgba[0, 0, 3] = 0
    save_png(root / "rgb" / "0_0000.png", rgba)
    scene = load_scene(root)
    np.testing.assert_allclose(scene.intrinsics[0], [5.0, 5.0, 3.5, 2.5])
    np.testing.assert_array_equal(scene.background, [0, 0, 1])
    np.testing.assert_array_equal(scene.images[0][0, 0], [0, 0, 255])
    # 3 x 3 matrix form.
    (root / "intrinsics.txt").write_text("6 0 4.5\n0 7 3.5\n0 0 1\n")
    np.testing.assert_allclose(load_scene(root).intrinsics[0], [6.0, 7.0, 4.5, 3.5])


# ---- instant-ngp -------------------------------------------------------------------------


def test_ngp_per_frame_intrinsics_and_missing_frames(lego_100: Path, tmp_path: Path) -> None:
    root = tmp_path / "ngp"
    path, meta = make_ngp_from_blender(lego_100, root, count=10)
    (root / meta["frames"][3]["file_path"]).unlink()
    (root / meta["frames"][5]["file_path"]).unlink()
    # One frame at half resolution: its intrinsics (given for 100 x 100) must be halved.
    small = read_image(root / meta["frames"][1]["file_path"])[::2, ::2]
    save_png(root / meta["frames"][1]["file_path"], small)
    assert detect_format(root) == "ngp"
    with pytest.warns(UserWarning, match="skipped 2 of 10") as record:
        scene = load_scene(root)
    assert len(record) == 1
    kept = [0, 1, 2, 4, 6, 7, 8, 9]
    assert len(scene) == 8 and scene.image_names[1] == "r_1"
    np.testing.assert_array_equal(scene.splits["test"], [0])
    assert scene.images[1].shape == (50, 50, 3) and scene.images[0].shape == (100, 100, 3)
    for j, k in enumerate(kept):
        f = meta["frames"][k]
        expect = np.array([f["fl_x"], f["fl_y"], f["cx"], f["cy"]]) * (0.5 if k == 1 else 1.0)
        np.testing.assert_allclose(scene.intrinsics[j], expect)
        np.testing.assert_array_equal(scene.poses[j], f["transform_matrix"])
    np.testing.assert_allclose(scene.bbox, [[-4 / 0.66] * 3, [4 / 0.66] * 3])

    meta.update({"scale": 0.5, "offset": [0.5, 0.0, 1.0], "aabb_scale": 2})
    path.write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = load_scene(root, splits=["train"])
    np.testing.assert_allclose(scene.bbox, [[-2.0, -1.0, -3.0], [2.0, 3.0, 1.0]])
    assert list(scene.splits) == ["train"] and len(scene) == 7


def test_ngp_camera_angle_and_all_missing(tmp_path: Path) -> None:
    root = make_blender(tmp_path / "b", splits={"train": 2})
    meta = json.loads((root / "transforms_train.json").read_text())
    (root / "transforms.json").write_text(json.dumps(meta))
    (root / "transforms_train.json").unlink()
    scene = load_scene(root)
    assert scene.format == "ngp"
    np.testing.assert_allclose(scene.intrinsics[:, 0], 4 / np.tan(0.6911112070083618 / 2))
    for f in (root / "train").iterdir():
        f.unlink()
    with pytest.warns(UserWarning), pytest.raises(SceneError, match="transforms.json"):
        load_scene(root)


# ---- image helpers -----------------------------------------------------------------------


@pytest.mark.parametrize("background", [(1.0, 1.0, 1.0), (0.0, 0.5, 0.2)])
def test_composite_rounds_like_float64(background: tuple[float, float, float]) -> None:
    rgb, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([rgb, rgb, 255 - rgb, alpha], axis=-1).astype(np.uint8)
    a = alpha[..., None] / 255.0
    ref = np.rint(rgba[..., :3] * a + 255.0 * np.array(background) * (1 - a))
    out = composite_rgba(rgba, background)
    assert out.dtype == np.uint8
    # Exact for integral background levels; within one level otherwise (float32 vs float64).
    tol = 0 if background[1] == 1.0 else 1
    assert np.abs(out.astype(int) - ref).max() <= tol


def test_write_png_roundtrip(tmp_path: Path) -> None:
    img = random_image(np.random.default_rng(2), 5, 7, 3)
    write_png(tmp_path / "a.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_scene_keeps_alpha_of_rgba_images_and_ray_table_serves_it(tmp_path: Path) -> None:
    root = make_blender(tmp_path / "s", splits={"train": 2, "val": 1})
    scene = load_scene(root)
    raw = read_image(root / "train" / "r_1.png")
    assert raw.shape[2] == 4 and scene.alphas is not None
    np.testing.assert_array_equal(scene.alphas[1], raw[..., 3])
    val = scene.subset("val")
    assert val.alphas is not None and val.alphas[0].shape == val.images[0].shape[:2]
    _, _, rgba = RayTable(scene, "train", with_alpha=True).image(1)
    _, _, rgb = RayTable(scene, "train").image(1)
    assert rgba.shape[1] == 4 and rgb.shape[1] == 3
    torch.testing.assert_close(rgba[:, :3], rgb)
    np.testing.assert_array_equal(np.rint(rgba[:, 3].numpy() * 255).astype(np.uint8), raw[..., 3].reshape(-1))


def test_rgb_scene_has_no_alpha(tmp_path: Path) -> None:
    scene = load_scene(make_nsvf(tmp_path / "n"))
    assert scene.alphas is None and scene.subset("train").alphas is None
    assert RayTable(scene, "train", with_alpha=True).image(0)[2].shape[1] == 3
