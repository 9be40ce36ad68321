"""Blender / NeRF-Synthetic scenes: ``transforms_{train,val,test}.json`` + images.

Per JSON file: ``camera_angle_x`` (focal = 0.5 W / tan(angle / 2)), optionally
``camera_angle_y``, and per file or per frame ``fl_x fl_y cx cy w h`` (what ``kilonerf
convert --to blender`` writes, so non-square and off-centre intrinsics survive). Frames carry
``file_path`` (relative to the folder; the original dataset leaves out ``.png``) and a 4 x 4
OpenGL ``transform_matrix``. RGBA is composited onto the background (white by default); the alpha is kept in
``Scene.alphas``.
Defaults: scene box [-1.5, 1.5]^3, near 2, far 6 (the NeRF convention), each overridable by the
side files described in :mod:`kilonerf.data.load`. Images within a split must share one size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kilonerf.data.images import check_same_size, read_rgb_alpha_many
from kilonerf.data.files import (
    check_pose,
    is_finite_number,
    read_json_file,
    resolve_inside,
    scene_extras,
    wanted_splits,
)
from kilonerf.data.scene import SPLIT_NAMES, Scene
from kilonerf.errors import SceneError

DEFAULT_BBOX = np.array([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
DEFAULT_NEAR_FAR = (2.0, 6.0)


def read_frames(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The top-level object and its ``frames`` list of a transforms JSON file."""
    meta = read_json_file(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise SceneError(path, "expected a JSON object with a 'frames' list")
    for k, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict):
            raise SceneError(path, f"frame {k} is not a JSON object")
    return meta, meta["frames"]


def frame_image_path(root: Path, json_path: Path, frame: dict[str, Any], k: int) -> Path:
    """The image file of a frame; ``.png`` is appended when the path as written is not a file
    (the original NeRF-Synthetic JSON leaves it out)."""
    path = resolve_inside(root, frame.get("file_path"), json_path, f"frame {k}")
    if not path.is_file():
        with_png = path.with_name(path.name + ".png")
        if with_png.is_file() or not path.suffix:
            return with_png
    return path


def frame_pose(json_path: Path, frame: dict[str, Any], k: int) -> np.ndarray:
    if "transform_matrix" not in frame:
        raise SceneError(json_path, f"frame {k}: no 'transform_matrix'")
    return check_pose(frame["transform_matrix"], json_path, f"frame {k}")


def frame_intrinsics(
    meta: dict[str, Any], frame: dict[str, Any], height: int, width: int, json_path: Path, k: int
) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy of one frame (per-frame keys win over the file's).

    Focal from ``fl_x`` / ``fl_y`` or ``camera_angle_x`` / ``camera_angle_y`` (fy = fx when
    only x is given); principal point ``cx cy`` or the image centre. When ``w`` / ``h`` are given
    and differ from the decoded image (a downscaled copy), all four are scaled to match.
    """

    def get(key: str) -> float | None:
        value = frame.get(key, meta.get(key))
        if value is None:
            return None
        if not is_finite_number(value):
            raise SceneError(json_path, f"frame {k}: '{key}' must be a finite number, got {value!r}")
        return float(value)

    w_file, h_file = get("w"), get("h")
    w_file = float(width) if w_file is None else w_file
    h_file = float(height) if h_file is None else h_file
    if w_file <= 0 or h_file <= 0:
        raise SceneError(json_path, f"frame {k}: image size w, h must be positive, got {w_file}, {h_file}")
    sx, sy = width / w_file, height / h_file

    fx, fy = get("fl_x"), get("fl_y")
    if fx is None:
        angle_x = get("camera_angle_x")
        if angle_x is None:
            raise SceneError(json_path, f"frame {k}: no focal length ('fl_x' or 'camera_angle_x')")
        if not 0 < angle_x < math.pi:
            raise SceneError(json_path, f"frame {k}: camera_angle_x {angle_x} is not in (0, pi)")
        fx = 0.5 * w_file / math.tan(0.5 * angle_x)
    if fy is None:
        angle_y = get("camera_angle_y")
        if angle_y is not None and not 0 < angle_y < math.pi:
            raise SceneError(json_path, f"frame {k}: camera_angle_y {angle_y} is not in (0, pi)")
        fy = 0.5 * h_file / math.tan(0.5 * angle_y) if angle_y is not None else fx
    cx, cy = get("cx"), get("cy")
    cx = 0.5 * w_file if cx is None else cx
    cy = 0.5 * h_file if cy is None else cy
    if fx <= 0 or fy <= 0:
        raise SceneError(json_path, f"frame {k}: focal length must be positive, got {fx}, {fy}")
    return fx * sx, fy * sy, cx * sx, cy * sy


def load_blender(
    path: str | Path,
    splits: Sequence[str] | None = None,
    background: Sequence[float] | np.ndarray | None = None,
) -> Scene:
    """Load a Blender-format scene folder (see the module docstring); arguments as ``load_scene``."""
    root = Path(path)
    if not root.is_dir():
        raise SceneError(root, "scene folder not found")
    available = [s for s in SPLIT_NAMES if (root / f"transforms_{s}.json").is_file()]
    if splits is not None:
        for s in splits:
            if s not in available and s in SPLIT_NAMES:
                raise SceneError(root / f"transforms_{s}.json", f"file not found (requested split '{s}')")
    chosen = wanted_splits(root, available, splits)
    bbox, near_far, bg = scene_extras(root, background, default_background=(1.0, 1.0, 1.0))
    box_given = bbox is not None

    paths: list[Path] = []
    poses: list[np.ndarray] = []
    refs: list[tuple[Path, dict[str, Any], dict[str, Any], int]] = []
    split_idx: dict[str, np.ndarray] = {}
    for split in chosen:
        json_path = root / f"transforms_{split}.json"
        meta, frames = read_frames(json_path)
        if not frames:
            raise SceneError(json_path, "no frames")
        start = len(paths)
        for k, frame in enumerate(frames):
            poses.append(frame_pose(json_path, frame, k))
            paths.append(frame_image_path(root, json_path, frame, k))
            refs.append((json_path, meta, frame, k))
        split_idx[split] = np.arange(start, len(paths), dtype=np.int64)

    images, alphas = read_rgb_alpha_many(paths, bg)
    for split, idx in split_idx.items():
        check_same_size([images[i] for i in idx], [paths[i] for i in idx], f"all '{split}' images must share one size")
    intrinsics = np.array(
        [frame_intrinsics(meta, frame, *img.shape[:2], jp, k) for img, (jp, meta, frame, k) in zip(images, refs)],
        dtype=np.float64,
    )
    near, far = near_far if near_far is not None else DEFAULT_NEAR_FAR
    return Scene(
        images=images,
        intrinsics=intrinsics.reshape(-1, 4),
        poses=np.array(poses, dtype=np.float64).reshape(-1, 4, 4),
        splits=split_idx,
        bbox=bbox if bbox is not None else DEFAULT_BBOX.copy(),
        box_given=box_given,
        near=float(near),
        far=float(far),
        background=bg,
        image_names=[p.stem for p in paths],
        root=root,
        format="blender",
        alphas=alphas,
    )
