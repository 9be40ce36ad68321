"""The browser's camera as the renderer needs it, and the scene's cameras as the browser needs them.

viser reports a camera as a rotation (w, x, y, z) and a position in the OpenCV convention
(+x right, +y down, looking along +z) with a vertical field of view; the project's cameras
are OpenGL camera-to-world matrices (+y up, looking along -z). Flipping the y and z axes
converts one into the other in both directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from viser.transforms import SO3

from kilonerf.data.camera_paths import box_centre, reference_cameras, scene_up
from kilonerf.data.cameras import camera_rays, look_at, pixel_coords
from kilonerf.data.scene import Scene

_FLIP_YZ = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class ViewCamera:
    """One viewpoint: where the browser's camera is and how wide it sees."""

    c2w: np.ndarray
    """(4, 4) float64 camera-to-world, OpenGL axes."""
    fov_y: float
    """Vertical field of view in radians."""
    aspect: float
    """Width / height of the browser's canvas."""

    def size(self, height: int) -> tuple[int, int]:
        """(height, width) in pixels of a frame ``height`` pixels tall with this aspect."""
        height = max(1, int(height))
        return height, max(1, round(height * self.aspect))

    def rays(self, height: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """World origins (H*W, 3) and unit directions (H*W, 3) through the pixel centres of a
        ``height``-pixel-tall frame, row-major."""
        h, w = self.size(height)
        focal = 0.5 * h / math.tan(0.5 * self.fov_y)
        intrinsics = torch.tensor([focal, focal, 0.5 * w, 0.5 * h], dtype=torch.float32, device=device)
        pose = torch.as_tensor(self.c2w, dtype=torch.float32, device=device)
        return camera_rays(pose, intrinsics, pixel_coords(h, w, device=device))


def from_opencv(wxyz: np.ndarray, position: np.ndarray, fov_y: float, aspect: float) -> ViewCamera:
    """A :class:`ViewCamera` from viser's camera state (OpenCV axes)."""
    c2w = np.eye(4)
    c2w[:3, :3] = SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix() @ _FLIP_YZ
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    # Clamped so that a degenerate report from a page cannot make the focal length infinite
    # or a frame absurdly wide.
    fov = min(max(float(fov_y), 1e-3), math.pi - 1e-3)
    return ViewCamera(c2w=c2w, fov_y=fov, aspect=min(max(float(aspect), 0.1), 10.0) if aspect > 0 else 1.0)


def opencv_wxyz(c2w: np.ndarray) -> np.ndarray:
    """(4,) viser orientation (OpenCV axes) of an OpenGL camera-to-world matrix (4, 4)."""
    return SO3.from_matrix(np.asarray(c2w, dtype=np.float64)[:3, :3] @ _FLIP_YZ).wxyz


@dataclass(frozen=True)
class TrainingCamera:
    """A photo's camera as viser draws it (a frustum)."""

    wxyz: np.ndarray
    position: np.ndarray
    fov_y: float
    aspect: float


def training_cameras(scene: Scene) -> list[TrainingCamera]:
    """The scene's reference cameras (the training ones, else all) as frustums."""
    return [_camera(scene, int(i)) for i in reference_cameras(scene)]


def _camera(scene: Scene, i: int) -> TrainingCamera:
    h, w = scene.image_size(i)
    fov_y = 2.0 * math.atan(0.5 * h / float(scene.intrinsics[i, 1]))
    return TrainingCamera(wxyz=opencv_wxyz(scene.poses[i]), position=scene.poses[i, :3, 3].copy(), fov_y=fov_y, aspect=w / h)


def home_view(scene: Scene, distance_scale: float = 1.4, turn: float = 0.3) -> tuple[np.ndarray, np.ndarray, float]:
    """Where a new browser tab starts: the first photo's camera moved ``distance_scale`` times
    as far from the scene box's centre and turned by ``turn`` radians about the up axis (so
    that the nearby training cameras are in view but none sits on the line of sight), looking
    at that centre with the photo's vertical field of view. Returns position (3,), look-at
    point (3,) and the field of view in radians."""
    cam = _camera(scene, int(reference_cameras(scene)[0]))
    centre = box_centre(scene)
    offset = _turn(distance_scale * (cam.position - centre), scene_up(scene), turn)
    return centre + offset, centre, cam.fov_y


def orbit(scene: Scene, angle: float, distance_scale: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) camera-to-world and look-at point (3,): the home view turned by ``angle`` radians
    about the scene's up axis through the box centre, ``distance_scale`` times as far away."""
    position, centre, _ = home_view(scene, distance_scale)
    up = scene_up(scene)
    return look_at(centre + _turn(position - centre, up, angle), centre, up), centre


def _turn(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """(3,) vector rotated by ``angle`` radians about the unit ``axis`` (Rodrigues' formula)."""
    c, s = math.cos(angle), math.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * float(axis @ v) * (1 - c)
