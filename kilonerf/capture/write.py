"""Writing a processed capture as a scene folder that ``kilonerf train`` reads with no option:

- ``transforms.json``: instant-ngp / nerfstudio convention (``fl_x fl_y cx cy w h``, ``k1 k2 p1
  p2``, frames with 4 x 4 camera-to-world matrices in OpenGL axes, ``file_path`` relative);
- ``images/``: the images that registered;
- ``points.ply``: the sparse points with their colours, in the scene's world;
- ``scene_type.txt``: the guessed type (taken by ``--scene-type auto``), ``bbox.txt``: the box
  (object or foreground box), ``near_and_far.txt`` for forward-facing captures;
- ``capture.json``: the transform applied to COLMAP's world, the camera, the SfM statistics;
- ``colmap/sparse/0/``: the kept reconstruction in COLMAP's format and world (for other tools).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kilonerf.capture.normalize import WorldTransform
from kilonerf.capture.sfm import Reconstruction
from kilonerf.data.distortion import DISTORTION_KEYS
from kilonerf.data.points import POINTS_FILE, write_points
from kilonerf.io import atomic_write_json, atomic_write_text

IMAGES_DIR = "images"
CAPTURE_FILE = "capture.json"


def transforms_json(rec: Reconstruction, poses: np.ndarray) -> dict[str, Any]:
    """The ``transforms.json`` content for the registered images and their normalised poses (N, 4, 4)."""
    fx, fy, cx, cy = (float(v) for v in rec.intrinsics)
    meta: dict[str, Any] = {"camera_model": "OPENCV", "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy,
                            "w": rec.width, "h": rec.height}  # fmt: skip
    coeffs = rec.distortion if rec.distortion is not None else np.zeros(5)
    meta.update({key: float(v) for key, v in zip(DISTORTION_KEYS, coeffs) if key != "k3"})
    meta["frames"] = [{"file_path": f"{IMAGES_DIR}/{name}", "transform_matrix": pose.tolist()}
                      for name, pose in zip(rec.names, poses)]  # fmt: skip
    return meta


def forward_near_far(points: np.ndarray, poses: np.ndarray) -> tuple[float, float]:
    """Depth range of the sparse points in front of the cameras (1st / 99th percentiles of all
    camera-point depths, widened by 10%), for forward-facing captures' NDC mapping."""
    rel = points[None, :, :] - poses[:, None, :3, 3]
    depth = -np.einsum("npi,ni->np", rel, poses[:, :3, 2]).reshape(-1)
    depth = depth[depth > 0]
    if len(depth) < 10:
        return 0.1, 100.0
    near, far = np.percentile(depth, [1.0, 99.0])
    return float(0.9 * near), float(1.1 * far)


def write_scene(
    out: Path, rec: Reconstruction, transform: WorldTransform, scene_type: str, reason: str, box: np.ndarray | None,
    info: dict[str, Any],
) -> None:
    """Write everything but the images (already in ``out/images``) into ``out``; see the module
    docstring. ``info`` (input, matching, ...) goes into ``capture.json`` as is."""
    poses = transform.apply_poses(rec.poses)
    points = transform.apply_points(rec.points)
    atomic_write_json(out / "transforms.json", transforms_json(rec, poses))
    write_points(out / POINTS_FILE, points, rec.colors)
    atomic_write_text(out / "scene_type.txt", scene_type + "\n")
    if box is not None:
        atomic_write_text(out / "bbox.txt", " ".join(f"{v:.6f}" for v in box.reshape(-1)) + "\n")
    near_far = None
    if scene_type == "forward":
        near_far = forward_near_far(points, poses)
        atomic_write_text(out / "near_and_far.txt", f"{near_far[0]:.6f} {near_far[1]:.6f}\n")
    atomic_write_json(out / CAPTURE_FILE, {
        **info,
        "world_transform": transform.to_json(),
        "camera": {"model": rec.camera_model, "params": rec.camera_params, "width": rec.width, "height": rec.height},
        "registered": rec.registered,
        "images": rec.total,
        "unregistered": info.get("unregistered", []),
        "mean_reprojection_error_px": rec.mean_error,
        "points": len(rec.points),
        "reconstructions_found": rec.models,
        "scene_type": scene_type,
        "scene_type_reason": reason,
        "bbox": None if box is None else box.tolist(),
        "near_far": near_far,
        "seconds": rec.seconds,
    })  # fmt: skip
