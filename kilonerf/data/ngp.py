"""instant-ngp / nerfstudio scenes: one ``transforms.json`` for all frames.

- Intrinsics per frame or global: ``fl_x fl_y cx cy w h``, or ``camera_angle_x`` (and
  ``camera_angle_y``); see :func:`kilonerf.data.blender.frame_intrinsics`. Frames may differ
  in size (each image keeps its own intrinsics).
- Lens distortion ``k1 k2 k3 p1 p2`` (per frame or global): each photo (and its alpha) is
  undistorted once at load (:mod:`kilonerf.data.distortion`); fisheye models are refused.
- Poses: 4 x 4 camera-to-world in OpenGL axes, as instant-ngp and nerfstudio write them.
- Scene box: instant-ngp maps a world point p to ``p * scale + offset`` (defaults 0.33 and
  0.5) and renders the cube of side ``aabb_scale`` (default 1) centred at 0.5 in that space; we
  return the same cube in the file's world units, ``(0.5 +- aabb_scale / 2 - offset) / scale``
  per axis, i.e. [-aabb_scale / 0.66, +aabb_scale / 0.66]^3 with the defaults.
- near / far: the closest and farthest distances from any camera to that box.
- Splits: the format has none; frames 0, 8, 16, ... (after dropping missing ones) are val and
  test, the rest train.
- Frames whose image file is missing are skipped with one warning counting them.
- Background: white, as for the Blender scenes instant-ngp is mostly used with.
The side files of :mod:`kilonerf.data.load` (``bbox.txt`` ...) override these defaults.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kilonerf.data.blender import frame_image_path, frame_intrinsics, frame_pose, read_frames
from kilonerf.data.distortion import frame_distortion, undistort_image
from kilonerf.data.images import read_rgb_alpha_many
from kilonerf.data.files import holdout_selection, is_finite_number, near_far_from_box, scene_extras, wanted_splits
from kilonerf.data.scene import SPLIT_NAMES, Scene
from kilonerf.errors import SceneError

NGP_SCALE = 0.33
NGP_OFFSET = 0.5


def ngp_box(meta: dict[str, Any], json_path: Path) -> np.ndarray:
    """(2, 3) instant-ngp render box in the file's world units (see the module docstring)."""

    def number(key: str, default: float) -> float:
        value = meta.get(key, default)
        if not is_finite_number(value):
            raise SceneError(json_path, f"'{key}' must be a finite number, got {value!r}")
        return float(value)

    aabb_scale, scale = number("aabb_scale", 1.0), number("scale", NGP_SCALE)
    if aabb_scale <= 0 or scale <= 0:
        raise SceneError(json_path, f"'aabb_scale' and 'scale' must be positive, got {aabb_scale}, {scale}")
    offset = meta.get("offset", NGP_OFFSET)
    try:
        off = np.broadcast_to(np.asarray(offset, dtype=np.float64), (3,))
    except (ValueError, TypeError, OverflowError):
        raise SceneError(json_path, f"'offset' must be a number or 3 numbers, got {offset!r}") from None
    if not np.isfinite(off).all():
        raise SceneError(json_path, f"'offset' must be finite, got {offset!r}")
    lo = (0.5 - aabb_scale / 2 - off) / scale
    hi = (0.5 + aabb_scale / 2 - off) / scale
    return np.stack([lo, hi])


def load_ngp(
    path: str | Path,
    splits: Sequence[str] | None = None,
    background: Sequence[float] | np.ndarray | None = None,
) -> Scene:
    """Load an instant-ngp / nerfstudio scene folder (see the module docstring); arguments as
    ``load_scene``."""
    root = Path(path)
    json_path = root / "transforms.json"
    meta, frames = read_frames(json_path)
    paths: list[Path] = []
    poses: list[np.ndarray] = []
    kept: list[tuple[dict[str, Any], int]] = []
    missing = 0
    for k, frame in enumerate(frames):
        pose = frame_pose(json_path, frame, k)
        image = frame_image_path(root, json_path, frame, k)
        if not image.is_file():
            missing += 1
            continue
        poses.append(pose)
        paths.append(image)
        kept.append((frame, k))
    if missing:
        warnings.warn(
            f"{json_path}: skipped {missing} of {len(frames)} frames whose image file is missing", stacklevel=2
        )
    if not paths:
        raise SceneError(json_path, f"no frame has an existing image file ({len(frames)} frames listed)")

    chosen = wanted_splits(root, list(SPLIT_NAMES), splits)
    keep, split_idx = holdout_selection(len(paths), chosen)

    bbox, near_far, bg = scene_extras(root, background, default_background=(1.0, 1.0, 1.0))

    box_given = bbox is not None
    images, alphas = read_rgb_alpha_many([paths[i] for i in keep], bg)
    intrinsics = np.array(
        [frame_intrinsics(meta, kept[i][0], *img.shape[:2], json_path, kept[i][1]) for img, i in zip(images, keep)],
        dtype=np.float64,
    ).reshape(-1, 4)
    for j, i in enumerate(keep):
        coeffs = frame_distortion(meta, kept[i][0], json_path, kept[i][1])
        if coeffs is not None:
            images[j] = undistort_image(images[j], intrinsics[j], coeffs, fill=bg * 255.0)
            if alphas is not None:
                alphas[j] = undistort_image(alphas[j], intrinsics[j], coeffs)
    pose_arr = np.array(poses, dtype=np.float64).reshape(-1, 4, 4)
    if bbox is None:
        bbox = ngp_box(meta, json_path)
    near, far = near_far if near_far is not None else near_far_from_box(pose_arr, bbox)
    return Scene(
        images=images,
        intrinsics=intrinsics,
        poses=pose_arr[keep],
        splits=split_idx,
        bbox=bbox,
        box_given=box_given,
        near=float(near),
        far=float(far),
        background=bg,
        image_names=[paths[i].stem for i in keep],
        root=root,
        format="ngp",
        alphas=alphas,
    )
