"""LLFF forward-facing captures: ``poses_bounds.npy`` + ``images_N/`` (or ``images/``).

``poses_bounds.npy`` is (N, 17) float: per image (sorted by file name) a row-major 3 x 5
matrix, then the near and far depth bounds. The 3 x 5 matrix holds the camera-to-world
rotation columns in LLFF's [down, right, backwards] axis order, the camera centre, and a
column [height, width, focal] for the full-resolution images.

Conversion (no NDC, no recentring or rescaling; the world stays in the file's units):
- OpenGL axes [right, up, backwards] = [col 1, -col 0, col 2].
- focal scaled by (decoded width / hwf width); fx = fy; cx, cy at the image centre.
- near / far: the minimum near bound and maximum far bound over all images.
- scene box: the axis-aligned bounds of every camera's view frustum between the near and far
  depths (the 8 corners of each frustum, through the image corners).
- splits: the usual LLFF hold-out, images 0, 8, 16, ... are test (and val), the rest train.
- background black (real photos have no alpha; the original NeRF adds no background for LLFF).
- the image folder: the most downsampled ``images_N/`` present, else ``images/``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kilonerf.data.images import check_same_size, read_rgb_many
from kilonerf.data.files import holdout_selection, scene_extras, wanted_splits
from kilonerf.data.scene import SPLIT_NAMES, Scene
from kilonerf.errors import SceneError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_folder(root: Path) -> Path:
    """The most downsampled ``images_N`` folder, else ``images``."""
    factors = []
    for p in root.iterdir():
        m = re.fullmatch(r"images_(\d+)", p.name)
        if m and p.is_dir():
            factors.append((int(m.group(1)), p))
    if factors:
        return max(factors)[1]
    if (root / "images").is_dir():
        return root / "images"
    raise SceneError(root / "images", "folder not found (LLFF needs images/ or images_N/)")


def llff_to_opengl(mats: np.ndarray) -> np.ndarray:
    """(N, 3, 5) LLFF matrices -> (N, 4, 4) camera-to-world in OpenGL axes."""
    n = mats.shape[0]
    poses = np.zeros((n, 4, 4), dtype=np.float64)
    poses[:, :3, 0] = mats[:, :, 1]
    poses[:, :3, 1] = -mats[:, :, 0]
    poses[:, :3, 2] = mats[:, :, 2]
    poses[:, :3, 3] = mats[:, :, 3]
    poses[:, 3, 3] = 1.0
    return poses


def frustum_box(poses: np.ndarray, intrinsics: np.ndarray, sizes: np.ndarray, near: float, far: float) -> np.ndarray:
    """(2, 3) bounds of all view frustums between depths ``near`` and ``far``.

    Args:
        poses: (N, 4, 4) OpenGL camera-to-world. intrinsics: (N, 4). sizes: (N, 2) height, width.
    """
    fx, fy, cx, cy = intrinsics.T
    h, w = sizes.T.astype(np.float64)
    corners = []
    for u_edge in (0.0, 1.0):
        for v_edge in (0.0, 1.0):
            x = (u_edge * w - cx) / fx
            y = -(v_edge * h - cy) / fy  # image y points down, camera y up
            for depth in (near, far):
                cam = np.stack([x * depth, y * depth, -np.full_like(x, depth)], axis=-1)
                corners.append(np.einsum("nij,nj->ni", poses[:, :3, :3], cam) + poses[:, :3, 3])
    pts = np.concatenate(corners)
    return np.stack([pts.min(axis=0), pts.max(axis=0)])


def load_llff(
    path: str | Path,
    splits: Sequence[str] | None = None,
    background: Sequence[float] | np.ndarray | None = None,
) -> Scene:
    """Load an LLFF scene folder (see the module docstring); arguments as ``load_scene``."""
    root = Path(path)
    npy = root / "poses_bounds.npy"
    try:
        data = np.load(npy, allow_pickle=False)
    except FileNotFoundError:
        raise SceneError(npy, "file not found") from None
    except Exception as exc:  # noqa: BLE001 - a garbled header fails in numpy's parser with any of several types
        raise SceneError(npy, f"not a readable .npy array ({type(exc).__name__})") from None
    if data.ndim != 2 or data.shape[1] != 17 or data.shape[0] == 0:
        raise SceneError(npy, f"expected shape (N, 17), got {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or not np.isfinite(data).all():
        raise SceneError(npy, "contains non-numeric or non-finite values")
    data = data.astype(np.float64)
    mats = data[:, :15].reshape(-1, 3, 5)
    bounds = data[:, 15:]
    if (bounds[:, 0] <= 0).any() or (bounds[:, 1] <= bounds[:, 0]).any():
        raise SceneError(npy, "depth bounds must satisfy 0 < near < far for every image")
    hwf = mats[:, :, 4]
    if (hwf <= 0).any():
        raise SceneError(npy, "height, width and focal (column 5) must be positive")

    folder = image_folder(root)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if len(files) != len(data):
        raise SceneError(folder, f"{len(files)} images but {npy.name} has {len(data)} poses")

    chosen = wanted_splits(root, list(SPLIT_NAMES), splits)
    keep, split_idx = holdout_selection(len(files), chosen)

    bbox, near_far, bg = scene_extras(root, background, default_background=(0.0, 0.0, 0.0))

    box_given = bbox is not None
    images = read_rgb_many([files[i] for i in keep], bg)
    check_same_size(images, [files[i] for i in keep], "LLFF images must share one size")
    height, width = images[0].shape[:2]
    scale = width / hwf[:, 1]
    focal = hwf[:, 2] * scale
    intrinsics = np.stack([focal, focal, np.full_like(focal, width / 2), np.full_like(focal, height / 2)], axis=-1)
    poses = llff_to_opengl(mats)
    near, far = near_far if near_far is not None else (float(bounds[:, 0].min()), float(bounds[:, 1].max()))
    if bbox is None:  # from every camera, decoded or not, so the box does not depend on ``splits``
        sizes = np.tile([height, width], (len(poses), 1))
        bbox = frustum_box(poses, intrinsics, sizes, near, far)
    return Scene(
        images=images,
        intrinsics=intrinsics[keep],
        poses=poses[keep],
        splits=split_idx,
        bbox=bbox,
        box_given=box_given,
        near=float(near),
        far=float(far),
        background=bg,
        image_names=[files[i].stem for i in keep],
        root=root,
        format="llff",
    )
