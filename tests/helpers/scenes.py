"""Tiny scene folders written on the fly for loader tests (a few 8 x 6 images each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def look_at(eye: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world at ``eye`` looking at the origin."""
    back = eye.astype(np.float64)
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    right = right / np.linalg.norm(right)
    cam_up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, cam_up, back, eye
    return pose


def ring_poses(n: int, radius: float = 4.0, height: float = 1.0) -> np.ndarray:
    """(n, 4, 4) cameras on a circle around the origin, looking at it."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([look_at(np.array([radius * np.cos(a), radius * np.sin(a), height])) for a in angles])


def random_image(rng: np.random.Generator, h: int = 6, w: int = 8, channels: int = 4) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_blender(
    root: Path,
    splits: dict[str, int] | None = None,
    size: tuple[int, int] = (6, 8),
    seed: int = 0,
    with_ext: bool = False,
) -> Path:
    """A Blender-format folder: ``splits`` maps split -> frame count (default 3 train, 2 val)."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 3, "val": 2}
    for split, n in splits.items():
        frames = []
        for k, pose in enumerate(ring_poses(n)):
            save_png(root / split / f"r_{k}.png", random_image(rng, *size))
            file_path = f"./{split}/r_{k}" + (".png" if with_ext else "")
            frames.append({"file_path": file_path, "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": 0.6911112070083618, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def make_nsvf(
    root: Path,
    counts: tuple[int, int, int] = (2, 1, 1),
    size: tuple[int, int] = (6, 8),
    intrinsics: str = "4 0 4 0\n0 4 3 0\n0 0 1 0\n0 0 0 1\n",
    seed: int = 0,
) -> Path:
    """An NSVF folder with ``counts`` train/val/test RGB images, OpenCV poses on a ring."""
    rng = np.random.default_rng(seed)
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    (root / "pose").mkdir(parents=True)
    k = 0
    for digit, n in enumerate(counts):
        for pose in ring_poses(n) if n else []:
            stem = f"{digit}_{k:04d}"
            save_png(root / "rgb" / f"{stem}.png", random_image(rng, *size, channels=3))
            np.savetxt(root / "pose" / f"{stem}.txt", pose @ flip)
            k += 1
    (root / "intrinsics.txt").write_text(intrinsics)
    (root / "bbox.txt").write_text("-1 -1 -1 1 1 1 0.25\n")
    return root


def make_ngp_from_blender(src: Path, dst: Path, count: int) -> tuple[Path, dict]:
    """``transforms.json`` in ``dst`` for the first ``count`` train frames of a Blender scene
    ``src`` (images copied to ``dst/images``), with per-frame intrinsics. Returns the path and
    the written JSON."""
    meta = json.loads((src / "transforms_train.json").read_text())
    (dst / "images").mkdir(parents=True)
    frames = []
    for k, frame in enumerate(meta["frames"][:count]):
        name = Path(frame["file_path"]).name + ".png"
        (dst / "images" / name).write_bytes((src / "train" / name).read_bytes())
        frames.append({
            "file_path": f"images/{name}",
            "transform_matrix": frame["transform_matrix"],
            "fl_x": 130.0 + k, "fl_y": 140.0 + k, "cx": 48.0 + 0.5 * k, "cy": 51.0, "w": 100, "h": 100,
        })
    out = {"aabb_scale": 4, "frames": frames}
    path = dst / "transforms.json"
    path.write_text(json.dumps(out))
    return path, out


def llff_folder(root: Path, n: int = 3, size: tuple[int, int] = (6, 8)) -> Path:
    """An LLFF folder: ``n`` RGB images in ``images_4/`` and their ``poses_bounds.npy``."""
    rng = np.random.default_rng(0)
    for k in range(n):
        save_png(root / "images_4" / f"im{k}.png", random_image(rng, *size, channels=3))
    mats = np.tile(np.array([[0, 1, 0, 0, 24], [1, 0, 0, 0, 32], [0, 0, 1, 4, 30]], dtype=np.float64), (n, 1, 1))
    np.save(root / "poses_bounds.npy", np.concatenate([mats.reshape(n, 15), np.tile([1.0, 5.0], (n, 1))], axis=1))
    return root
