"""NSVF scenes (the KiloNeRF paper's format).

Layout::

    rgb/0_*.png  rgb/1_*.png  rgb/2_*.png   train / val / test images (prefix digit = split)
    pose/<same stem>.txt                     4 x 4 camera-to-world, OpenCV axes
    intrinsics.txt                           3 x 3 or 4 x 4 matrix, or DeepVoxels' first line "f cx cy ..."
    bbox.txt                                 xmin ymin zmin xmax ymax zmax [voxel_size]
    near_and_far.txt, background_color.txt   optional

Poses are converted from OpenCV (x right, y down, z forward) to OpenGL by negating the camera
y and z axes. ``intrinsics/<same stem>.txt`` per image (same file formats) replaces
``intrinsics.txt`` when the cameras differ; this is this project's extension, used by
``kilonerf convert`` to keep per-image intrinsics. Without ``near_and_far.txt``, near/far are
the closest and farthest distances from any camera to the box. RGBA images are composited
onto the background (``background_color.txt``, else white). Images within a split share one size
and are ordered by name with digit runs compared as numbers (``r_2`` before ``r_10``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kilonerf.data.images import check_same_size, read_rgb_alpha_many
from kilonerf.data.files import (
    check_pose,
    natural_key,
    near_far_from_box,
    read_numbers,
    scene_extras,
    wanted_splits,
)
from kilonerf.data.scene import SPLIT_NAMES, Scene
from kilonerf.errors import SceneError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplying a camera-to-world pose flips its camera y and z axes (its own inverse)."""


def read_intrinsics(path: Path) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy from an NSVF intrinsics file (matrix or DeepVoxels first line)."""
    rows = read_numbers(path)
    widths = {len(r) for r in rows}
    if len(widths) == 1 and (len(rows), len(rows[0])) in ((3, 3), (3, 4), (4, 4)):
        k = np.array(rows, dtype=np.float64)
        if abs(k[0, 1]) > 1e-9 * abs(k[0, 0]):
            raise SceneError(path, f"skewed intrinsics (K[0, 1] = {k[0, 1]}) are not supported")
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    elif len(rows[0]) >= 3:
        fx, cx, cy = rows[0][:3]  # DeepVoxels: "f cx cy [0]"; later lines are not intrinsics
        fy = fx
    else:
        raise SceneError(path, "expected a 3 x 3 / 4 x 4 matrix or a first line 'f cx cy'")
    values = np.array([fx, fy, cx, cy], dtype=np.float64)
    if not np.isfinite(values).all() or fx <= 0 or fy <= 0:
        raise SceneError(path, f"focal lengths must be finite and positive, got fx={fx}, fy={fy}")
    return float(fx), float(fy), float(cx), float(cy)


def split_of(path: Path) -> str:
    """Split named by an NSVF image's prefix digit (``0_`` train, ``1_`` val, ``2_`` test)."""
    stem = path.stem
    if len(stem) < 3 or stem[0] not in "012" or stem[1] != "_":
        raise SceneError(path, "NSVF image names must start with 0_, 1_ or 2_ (train / val / test)")
    return SPLIT_NAMES[int(stem[0])]


def load_nsvf(
    path: str | Path,
    splits: Sequence[str] | None = None,
    background: Sequence[float] | np.ndarray | None = None,
) -> Scene:
    """Load an NSVF scene folder (see the module docstring); arguments as ``load_scene``."""
    root = Path(path)
    rgb_dir = root / "rgb"
    if not rgb_dir.is_dir():
        raise SceneError(rgb_dir, "folder not found")
    files = sorted(
        (p for p in rgb_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise SceneError(rgb_dir, "no .png / .jpg images")
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(split_of(f), []).append(f)
    chosen = wanted_splits(root, [s for s in SPLIT_NAMES if s in by_split], splits)
    if not (root / "bbox.txt").is_file():
        raise SceneError(root / "bbox.txt", "file not found (an NSVF scene needs its scene box)")
    bbox, near_far, bg = scene_extras(root, background, default_background=(1.0, 1.0, 1.0))
    box_given = bbox is not None
    assert bbox is not None

    per_image = (root / "intrinsics").is_dir()
    shared = None if per_image else read_intrinsics(root / "intrinsics.txt")
    paths: list[Path] = []
    poses, intrinsics = [], []
    split_idx: dict[str, np.ndarray] = {}
    for split in chosen:
        start = len(paths)
        for f in by_split[split]:
            pose_file = root / "pose" / f"{f.stem}.txt"
            if not pose_file.is_file():
                raise SceneError(pose_file, f"file not found (pose of {f.name})")
            poses.append(check_pose(read_numbers(pose_file), pose_file, "camera-to-world") @ OPENCV_TO_OPENGL)
            intrinsics.append(shared if shared is not None else read_intrinsics(root / "intrinsics" / f"{f.stem}.txt"))
            paths.append(f)
        split_idx[split] = np.arange(start, len(paths), dtype=np.int64)

    images, alphas = read_rgb_alpha_many(paths, bg)
    for split, idx in split_idx.items():
        check_same_size([images[i] for i in idx], [paths[i] for i in idx], f"all '{split}' images must share one size")
    pose_arr = np.array(poses, dtype=np.float64).reshape(-1, 4, 4)
    near, far = near_far if near_far is not None else near_far_from_box(pose_arr, bbox)
    return Scene(
        images=images,
        intrinsics=np.array(intrinsics, dtype=np.float64).reshape(-1, 4),
        poses=pose_arr,
        splits=split_idx,
        bbox=bbox,
        box_given=box_given,
        near=float(near),
        far=float(far),
        background=bg,
        image_names=[p.stem[2:] for p in paths],
        root=root,
        format="nsvf",
        alphas=alphas,
    )
