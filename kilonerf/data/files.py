"""Reading the files of a scene folder: JSON, number tables, the NSVF side files, poses and
paths, with every problem a :class:`~kilonerf.errors.SceneError` naming the file.

Every format loader accepts the same optional side files in the scene folder, which override
its defaults (the NSVF conventions, so a converted scene loads back identically):
``bbox.txt`` (``xmin ymin zmin xmax ymax zmax [voxel_size]``), ``near_and_far.txt``
(``near far``) and ``background_color.txt`` (3 floats in [0, 1] or [0, 255]).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kilonerf.data.scene import SPLIT_NAMES
from kilonerf.errors import SceneError
from kilonerf.io import read_json
from kilonerf.names import SCENE_TYPES


def read_json_file(path: Path) -> Any:
    """Parse a scene's JSON file; SceneError naming it when missing, unreadable or malformed."""
    return read_json(path, SceneError)


def read_numbers(path: Path) -> list[list[float]]:
    """Whitespace-separated numbers of a text file, one list per non-empty line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SceneError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SceneError(path, f"cannot read ({exc})") from None
    rows = []
    for k, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise SceneError(path, f"line {k} is not a list of numbers: {line.strip()[:60]!r}") from None
    if not rows:
        raise SceneError(path, "file is empty")
    return rows


def is_finite_number(value: Any) -> bool:
    """Whether a parsed JSON value is a number that is finite as a float: booleans are not
    numbers here, nor is an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_pose(matrix: Any, where: Path, what: str) -> np.ndarray:
    """(4, 4) float64 from a nested list / array; SceneError naming ``where`` otherwise."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise SceneError(where, f"{what}: pose is not a 4 x 4 matrix of numbers") from None
    if m.shape != (4, 4):
        raise SceneError(where, f"{what}: pose must be 4 x 4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise SceneError(where, f"{what}: pose has non-finite values")
    return m


def resolve_inside(root: Path, rel: Any, where: Path, what: str) -> Path:
    """``root / rel``, refusing absolute paths and ``..`` escapes (checked lexically, so a
    dataset whose images are symlinks elsewhere still loads)."""
    if not isinstance(rel, str) or not rel.strip():
        raise SceneError(where, f"{what}: file_path must be a non-empty string, got {rel!r}")
    if os.path.isabs(rel) or rel.startswith("\\"):
        raise SceneError(where, f"{what}: file_path {rel!r} is absolute; it must lie inside {root}")
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, rel))
    if full != base and not full.startswith(base + os.sep):
        raise SceneError(where, f"{what}: file_path {rel!r} points outside the dataset folder {root}")
    return Path(full)


def read_bbox(path: Path) -> np.ndarray:
    """(2, 3) box from an NSVF ``bbox.txt`` (the optional 7th number, a voxel size, is ignored)."""
    values = [v for row in read_numbers(path) for v in row]
    if len(values) not in (6, 7):
        raise SceneError(path, f"expected 'xmin ymin zmin xmax ymax zmax [voxel_size]', got {len(values)} numbers")
    box = np.array(values[:6], dtype=np.float64).reshape(2, 3)
    if not np.isfinite(box).all() or not (box[1] > box[0]).all():
        raise SceneError(path, f"not a valid box (need finite min < max per axis): {values[:6]}")
    return box


def read_near_far(path: Path) -> tuple[float, float]:
    values = [v for row in read_numbers(path) for v in row]
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or not 0 <= values[0] < values[1]:
        raise SceneError(path, f"expected 'near far' with 0 <= near < far, got {values}")
    return values[0], values[1]


def read_background(path: Path) -> np.ndarray:
    """(3,) float32 in [0, 1]; values above 1 are read as 0-255."""
    values = [v for row in read_numbers(path) for v in row]
    if len(values) == 1:
        values = values * 3
    arr = np.array(values, dtype=np.float64)
    if arr.shape != (3,) or not np.isfinite(arr).all() or (arr < 0).any() or (arr > 255).any():
        raise SceneError(path, f"expected 3 colour values in [0, 1] or [0, 255], got {values}")
    if (arr > 1).any():
        arr = arr / 255.0
    return arr.astype(np.float32)


SCENE_TYPE_FILE = "scene_type.txt"
"""Optional side file naming the scene type that ``--scene-type auto`` takes (one word)."""


def read_scene_type(path: Path) -> str:
    """The scene type named in ``path`` (:data:`SCENE_TYPE_FILE`); SceneError if it names none."""
    try:
        word = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SceneError(path, f"cannot read ({exc.__class__.__name__})") from None
    if word not in SCENE_TYPES:
        raise SceneError(path, f"must hold one of {', '.join(SCENE_TYPES)}, got {word[:40]!r}")
    return word


def scene_extras(
    root: Path, background: Sequence[float] | np.ndarray | None, default_background: Sequence[float]
) -> tuple[np.ndarray | None, tuple[float, float] | None, np.ndarray]:
    """The optional side files: (bbox or None, (near, far) or None, background colour).

    An explicit ``background`` argument wins over ``background_color.txt``, which wins over
    the format's default.
    """
    bbox = read_bbox(root / "bbox.txt") if (root / "bbox.txt").is_file() else None
    nf = read_near_far(root / "near_and_far.txt") if (root / "near_and_far.txt").is_file() else None
    if background is not None:
        bg = np.asarray(background, dtype=np.float32).reshape(-1)
        if bg.shape != (3,) or not np.isfinite(bg).all() or (bg < 0).any() or (bg > 1).any():
            raise SceneError(root, f"background must be 3 values in [0, 1], got {list(np.ravel(background))}")
    elif (root / "background_color.txt").is_file():
        bg = read_background(root / "background_color.txt")
    else:
        bg = np.asarray(default_background, dtype=np.float32)
    return bbox, nf, bg


def wanted_splits(root: Path, available: Sequence[str], splits: Sequence[str] | None) -> list[str]:
    """The requested splits (all available when None), in train/val/test order."""
    if splits is None:
        return [s for s in SPLIT_NAMES if s in available]
    for s in splits:
        if s not in available:
            raise SceneError(root, f"no '{s}' split (has: {', '.join(available) or 'none'})")
    return [s for s in SPLIT_NAMES if s in splits]


def holdout_selection(n: int, chosen: Sequence[str], every: int = 8) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The LLFF-style hold-out over ``n`` items: 0, every, 2*every, ... are val and test, the
    rest train.

    Returns:
        keep: sorted item numbers used by the ``chosen`` splits; splits: split name -> indices
        into ``keep`` (val and test share their images).
    """
    idx = np.arange(n, dtype=np.int64)
    held = idx[::every]
    every_split = {"train": idx[idx % every != 0], "val": held, "test": held}
    keep = np.unique(np.concatenate([every_split[s] for s in chosen] + [np.zeros(0, dtype=np.int64)]))
    position = np.full(n, -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    return keep, {s: position[every_split[s]] for s in chosen}


def natural_key(name: str) -> list[str | int]:
    """Sort key ordering digit runs by value: ``r_2`` before ``r_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def near_far_from_box(poses: np.ndarray, bbox: np.ndarray) -> tuple[float, float]:
    """Near/far covering ``bbox`` from every camera centre: near = the closest distance from a
    camera to the box (0 when a camera is inside it), far = the farthest box corner.

    Args:
        poses: (N, 4, 4) camera-to-world. bbox: (2, 3).
    """
    centres = poses[:, :3, 3]
    nearest = np.clip(centres, bbox[0], bbox[1])
    near = float(np.linalg.norm(centres - nearest, axis=-1).min())
    corners = np.array([[bbox[i, 0], bbox[j, 1], bbox[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    far = float(np.linalg.norm(centres[:, None] - corners[None], axis=-1).max())
    return near, far
