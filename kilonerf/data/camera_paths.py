"""Camera paths for videos: an orbit or a spiral generated from a scene, a split's cameras,
or a JSON file that users can write or edit.

JSON format (``save_camera_path`` writes it, ``load_camera_path`` reads it)::

    {"width": 400, "height": 300,
     "fx": 500.0, "fy": 500.0, "cx": 200.0, "cy": 150.0,      # optional defaults for all frames
     "frames": [{"transform_matrix": [[...4 x 4...]],          # camera-to-world, OpenGL axes
                 "fx": 500.0, "fy": 500.0, "cx": 200.0, "cy": 150.0}, ...]}

Each frame's intrinsics are its own keys, else the top-level ones; ``fy`` defaults to ``fx``
and ``cx, cy`` to the image centre, so a frame needs at least ``fx`` (here or at the top).
Pixel centres are at +0.5, as everywhere in kilonerf.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kilonerf.data.cameras import look_at
from kilonerf.data.files import check_pose, is_finite_number, read_json_file
from kilonerf.data.scene import Scene
from kilonerf.errors import KiloNerfError, SceneError
from kilonerf.io import atomic_write_json

PATH_KINDS = ("auto", "orbit", "spiral", "test")
DEFAULT_FRAMES = 120
MAX_SIZE = 16384


@dataclass(frozen=True)
class CameraPath:
    poses: np.ndarray
    """(N, 4, 4) float64 camera-to-world, OpenGL axes."""
    intrinsics: np.ndarray
    """(N, 4) float64 fx, fy, cx, cy in pixels."""
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.poses)

    def resized(self, width: int) -> CameraPath:
        """The same cameras rendering ``width`` pixels wide (height keeps the aspect ratio)."""
        if width == self.width:
            return self
        height = max(1, round(self.height * width / self.width))
        sx, sy = width / self.width, height / self.height
        scale = np.array([sx, sy, sx, sy])
        return CameraPath(self.poses, self.intrinsics * scale, width, height)

    def first(self, count: int | None) -> CameraPath:
        """At most the first ``count`` frames (all when None)."""
        if count is None or count >= len(self):
            return self
        return CameraPath(self.poses[:count], self.intrinsics[:count], self.width, self.height)


def reference_cameras(scene: Scene) -> np.ndarray:
    """Indices of the cameras that stand for the scene (generated paths, the viewer's start and
    frustums): the training ones, else all."""
    if "train" in scene.splits and len(scene.splits["train"]):
        return scene.splits["train"]
    return np.arange(len(scene))


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else fallback


def scene_up(scene: Scene) -> np.ndarray:
    """(3,) unit world 'up': the mean of the reference cameras' up axes (+z for Blender scenes)."""
    return _unit(scene.poses[reference_cameras(scene)][:, :3, 1].mean(axis=0), np.array([0.0, 0.0, 1.0]))


def box_centre(scene: Scene) -> np.ndarray:
    """(3,) world centre of the scene box: what generated paths and the viewer look at (for a
    mapped scene, the box centre mapped back into the world)."""
    centre = scene.bbox.mean(axis=0)
    if scene.ray_map is None:
        return centre
    return scene.ray_map.unmap_points(torch.as_tensor(centre[None], dtype=torch.float64))[0].numpy()


def _perpendicular(axis: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to unit ``axis``, as close to ``hint`` as possible."""
    v = hint - (hint @ axis) * axis
    if np.linalg.norm(v) < 1e-9:
        helper = np.eye(3)[np.argmin(np.abs(axis))]
        v = helper - (helper @ axis) * axis
    return v / np.linalg.norm(v)


def _scene_frame(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, np.ndarray]:
    """What generated paths share: camera centres (M, 3), the box centre (3,), the mean
    camera up (3,) and the first reference camera's width, height and intrinsics (4,)."""
    idx = reference_cameras(scene)
    if len(idx) == 0:
        raise SceneError(scene.root or Path("scene"), "no cameras to build a path from")
    h, w = scene.image_size(int(idx[0]))
    return scene.poses[idx][:, :3, 3], box_centre(scene), scene_up(scene), w, h, scene.intrinsics[int(idx[0])]


def _path(eyes: np.ndarray, target: np.ndarray, up: np.ndarray, w: int, h: int, intr: np.ndarray) -> CameraPath:
    poses = np.stack([look_at(e, target, up) for e in eyes])
    return CameraPath(poses, np.tile(np.asarray(intr, dtype=np.float64), (len(eyes), 1)), w, h)


def orbit_path(scene: Scene, frames: int = DEFAULT_FRAMES) -> CameraPath:
    """One full circle around the scene box's centre, about the cameras' mean up axis.

    Radius and height above the centre are the medians over the training cameras; the circle
    starts at the first training camera's azimuth. Intrinsics and size: the first training
    camera's.
    """
    centres, target, up, w, h, intr = _scene_frame(scene)
    offsets = centres - target
    heights = offsets @ up
    flat = offsets - heights[:, None] * up
    radius = float(np.median(np.linalg.norm(flat, axis=1)))
    if radius < 1e-6:  # every camera on the axis: circle at the cameras' distance instead
        radius = float(np.median(np.abs(heights))) or 1.0
    e1 = _perpendicular(up, flat[0])
    e2 = np.cross(up, e1)
    angles = 2.0 * np.pi * np.arange(frames) / frames
    eyes = target + float(np.median(heights)) * up + radius * (np.cos(angles)[:, None] * e1 + np.sin(angles)[:, None] * e2)
    return _path(eyes, target, up, w, h, intr)


def spiral_path(scene: Scene, frames: int = DEFAULT_FRAMES, rotations: float = 2.0) -> CameraPath:
    """NeRF's spiral: ``rotations`` turns around the mean training camera, in the plane facing
    the box centre, drifting towards and away from it at half the rate; every frame looks at
    the box centre.

    The radii along the three axes are the 90th percentiles of the training cameras' offsets
    from their mean (as NeRF's LLFF renders); the sideways ones at least 2 % of the distance
    to the centre so a tight capture still moves.
    """
    centres, target, up, w, h, intr = _scene_frame(scene)
    mean = centres.mean(axis=0)
    scale = float(np.median(np.linalg.norm(centres - target, axis=1))) or 1.0
    back = _unit(mean - target, up)
    right = _perpendicular(back, np.cross(up, back))
    axes = np.stack([right, np.cross(back, right), back], axis=1)
    local = (centres - mean) @ axes
    radii = np.percentile(np.abs(local), 90, axis=0)
    radii[:2] = np.maximum(radii[:2], 0.02 * scale)
    t = 2.0 * np.pi * rotations * np.arange(frames) / frames
    wave = np.stack([np.cos(t), -np.sin(t), -np.sin(0.5 * t)], axis=1) * radii
    return _path(mean + wave @ axes.T, target, up, w, h, intr)


def split_path(scene: Scene, split: str) -> CameraPath:
    """The cameras of one split of the scene, in order (they must share one image size)."""
    root = scene.root or Path("scene")
    if split not in scene.splits or len(scene.splits[split]) == 0:
        raise SceneError(root, f"no '{split}' split to take cameras from (has: {', '.join(scene.splits) or 'none'})")
    idx = scene.splits[split]
    sizes = {scene.image_size(int(i)) for i in idx}
    if len(sizes) != 1:
        raise SceneError(root, f"the '{split}' split mixes image sizes {sorted(sizes)} (H, W); one video needs one size")
    h, w = sizes.pop()
    return CameraPath(scene.poses[idx].copy(), scene.intrinsics[idx].copy(), w, h)


def make_camera_path(spec: str, scene: Scene, frames: int | None = None, width: int | None = None) -> CameraPath:
    """``orbit`` / ``spiral`` (``frames`` long, default 120; ``auto``: spiral for forward-facing
    scenes, orbit otherwise), ``test`` (the test split) or a
    JSON file; ``test`` and files are cut to their first ``frames`` when given. ``width``
    rescales the intrinsics to that many pixels wide."""
    if frames is not None and frames < 1:
        raise KiloNerfError(f"the frame count must be at least 1, got {frames}")
    if width is not None and not 1 <= width <= MAX_SIZE:
        raise KiloNerfError(f"the width must be 1 to {MAX_SIZE} pixels, got {width}")
    if spec == "auto":
        spec = "spiral" if scene.scene_type == "forward" else "orbit"
    if spec == "orbit":
        path = orbit_path(scene, frames or DEFAULT_FRAMES)
    elif spec == "spiral":
        path = spiral_path(scene, frames or DEFAULT_FRAMES)
    elif spec == "test":
        path = split_path(scene, "test").first(frames)
    elif not Path(spec).exists():
        raise SceneError(Path(spec), f"no such camera-path file (nor one of {', '.join(PATH_KINDS)})")
    else:
        path = load_camera_path(spec).first(frames)
    return path.resized(width) if width else path


# ---- JSON ---------------------------------------------------------------------------------


def _positive_int(meta: dict[str, Any], key: str, where: Path) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise SceneError(where, f"'{key}' must be an integer from 1 to {MAX_SIZE}, got {value!r}")
    return value


def _number(value: Any, where: Path, what: str, positive: bool) -> float:
    if not is_finite_number(value):
        raise SceneError(where, f"{what} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise SceneError(where, f"{what} must be positive, got {value!r}")
    return float(value)


def _frame_intrinsics(frame: dict[str, Any], top: dict[str, Any], k: int, w: int, h: int, where: Path) -> list[float]:
    def get(key: str) -> Any:
        return frame.get(key, top.get(key))

    if get("fx") is None:
        raise SceneError(where, f"frame {k}: no 'fx' (give it per frame or at the top level)")
    fx = _number(get("fx"), where, f"frame {k}: fx", positive=True)
    fy = _number(get("fy"), where, f"frame {k}: fy", positive=True) if get("fy") is not None else fx
    cx = _number(get("cx"), where, f"frame {k}: cx", positive=False) if get("cx") is not None else 0.5 * w
    cy = _number(get("cy"), where, f"frame {k}: cy", positive=False) if get("cy") is not None else 0.5 * h
    return [fx, fy, cx, cy]


def load_camera_path(file: str | Path) -> CameraPath:
    """Read and validate a camera-path JSON file (format in the module docstring).

    Raises:
        SceneError: naming the file, when it is missing, malformed or inconsistent.
    """
    where = Path(file)
    meta = read_json_file(where)
    if not isinstance(meta, dict):
        raise SceneError(where, "a camera path must be a JSON object with 'width', 'height' and 'frames'")
    w, h = _positive_int(meta, "width", where), _positive_int(meta, "height", where)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise SceneError(where, "'frames' must be a non-empty list")
    poses, intrinsics = [], []
    for k, frame in enumerate(frames):
        if not isinstance(frame, dict) or "transform_matrix" not in frame:
            raise SceneError(where, f"frame {k}: must be an object with a 'transform_matrix'")
        poses.append(check_pose(frame["transform_matrix"], where, f"frame {k}"))
        intrinsics.append(_frame_intrinsics(frame, meta, k, w, h, where))
    return CameraPath(np.stack(poses), np.array(intrinsics, dtype=np.float64), w, h)


def save_camera_path(path: CameraPath, file: str | Path) -> None:
    """Write ``path`` as JSON (every frame with its own intrinsics), atomically."""
    frames = [
        {"transform_matrix": pose.tolist(), **dict(zip(("fx", "fy", "cx", "cy"), map(float, intr)))}
        for pose, intr in zip(path.poses, path.intrinsics)
    ]
    atomic_write_json(file, {"width": path.width, "height": path.height, "frames": frames})
