"""Putting a reconstruction into a standard frame, guessing its scene type, fitting its box.

Structure from motion fixes the world only up to a similarity (rotation, translation, scale).
The frame chosen here: the cameras' mean up vector is +z, the origin is the point the cameras
look at (:func:`~kilonerf.data.scene_types.look_at_point`), and the median camera distance to
it is :data:`CAMERA_DISTANCE` (the distance of the built-in scenes' cameras). A world point
maps as ``x_new = scale * (R @ x + t)``; :class:`WorldTransform` records it so that a user can
map back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kilonerf.data.scene_types import FORWARD_MAX_ANGLE, look_at_point, viewing_spread

CAMERA_DISTANCE = 4.0
"""Median distance from a camera to the look-at point after normalising."""
OBJECT_POINT_FRACTION = 0.98
"""``object`` needs at least this fraction of the sparse points near the look-at point ..."""
OBJECT_RADIUS = 0.6
"""... within this fraction of the median camera distance ..."""
OBJECT_MAX_GAP = 120.0
"""... and cameras all around it: no gap between the cameras' azimuths (around +z) wider than
this many degrees."""
BOX_PERCENTILES = (2.0, 98.0)
"""Robust extent of the sparse points for the box: stray points (mismatches, far background
seen through a window) do not stretch it."""
BOX_MARGIN = 0.1
"""The box grows by this fraction of its size on every side (the percentiles cut the rims)."""


@dataclass(frozen=True)
class WorldTransform:
    """``x_new = scale * (rotation @ x + translation)``, from the reconstruction's world to the
    written scene's; poses transform alike (their rotation columns by ``rotation`` only)."""

    rotation: np.ndarray
    """(3, 3) proper rotation."""
    translation: np.ndarray
    """(3,) in the reconstruction's units."""
    scale: float

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix of the map."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.scale * self.translation
        return m

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3)."""
        return self.scale * (points @ self.rotation.T + self.translation)

    def invert_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) written-scene points -> reconstruction points (inverse of :meth:`apply_points`)."""
        return (points / self.scale - self.translation) @ self.rotation

    def apply_poses(self, poses: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world -> the same cameras in the new world (still rigid)."""
        out = poses.copy()
        out[:, :3, :3] = self.rotation @ poses[:, :3, :3]
        out[:, :3, 3] = self.apply_points(poses[:, :3, 3])
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "formula": "x_scene = scale * (rotation @ x_colmap + translation)",
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
            "scale": self.scale,
            "matrix": self.matrix().tolist(),
        }


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking unit vector ``a`` to unit vector ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-12:  # opposite: half a turn about any axis orthogonal to a
        axis = np.cross(a, np.eye(3)[np.argmin(np.abs(a))])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def normalizing_transform(poses: np.ndarray) -> WorldTransform:
    """The transform to the standard frame (module docstring) of cameras ``poses`` (N, 4, 4),
    camera-to-world in OpenGL axes (+y up in each camera)."""
    up = poses[:, :3, 1].sum(0)
    rot = rotation_between(up, np.array([0.0, 0.0, 1.0])) if np.linalg.norm(up) > 1e-9 else np.eye(3)
    turned = poses.copy()
    turned[:, :3, :3] = rot @ poses[:, :3, :3]
    turned[:, :3, 3] = poses[:, :3, 3] @ rot.T
    centre = look_at_point(turned)
    dist = float(np.median(np.linalg.norm(turned[:, :3, 3] - centre, axis=1)))
    scale = CAMERA_DISTANCE / dist if dist > 1e-12 else 1.0
    return WorldTransform(rot, -centre, scale)


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> WorldTransform:
    """The similarity that best maps points ``src`` (N, 3) onto ``dst`` (N, 3) in least squares
    (Umeyama 1991): ``dst ~ scale * (R @ src + t)`` in :class:`WorldTransform`'s form."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1.0
    rot = u @ s @ vt
    var = float((xs**2).sum() / len(src))
    scale = float(np.trace(np.diag(d) @ s) / var) if with_scale and var > 0 else 1.0
    # dst = scale * R src + (mu_d - scale * R mu_s) = scale * (R src + t)
    t = mu_d / scale - rot @ mu_s
    return WorldTransform(rot, t, scale)


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) angles in degrees between rotations ``a`` and ``b`` (N, 3, 3)."""
    cos = (np.einsum("nij,nij->n", a, b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def azimuth_gap(poses: np.ndarray) -> float:
    """Widest gap in degrees between the cameras' azimuths around +z through the origin."""
    az = np.sort(np.degrees(np.arctan2(poses[:, 1, 3], poses[:, 0, 3])))
    if len(az) < 2:
        return 360.0
    gaps = np.diff(np.concatenate([az, az[:1] + 360.0]))
    return float(gaps.max())


def guess_scene_type(poses: np.ndarray, points: np.ndarray) -> tuple[str, str]:
    """(scene type, reason) for a normalised reconstruction: cameras ``poses`` (N, 4, 4) and
    sparse points (M, 3), the look-at point at the origin.

    ``forward`` when every camera looks within :data:`FORWARD_MAX_ANGLE` degrees of the mean
    view (as :func:`~kilonerf.data.scene_types.detect_scene_type` decides); ``object`` when
    the cameras surround the look-at point (no azimuth gap over :data:`OBJECT_MAX_GAP`) and at
    least :data:`OBJECT_POINT_FRACTION` of the points lie within :data:`OBJECT_RADIUS` of the
    median camera distance from it (little background structure: an object on a plain
    backdrop); ``unbounded`` otherwise (a 360° capture with surroundings).
    """
    spread = viewing_spread(poses)
    if spread <= FORWARD_MAX_ANGLE:
        return "forward", f"the cameras' viewing directions spread {spread:.0f}° (<= {FORWARD_MAX_ANGLE:.0f}°)"
    dist = float(np.median(np.linalg.norm(poses[:, :3, 3], axis=1)))
    near = float(np.mean(np.linalg.norm(points, axis=1) <= OBJECT_RADIUS * dist)) if len(points) else 0.0
    gap = azimuth_gap(poses)
    what = f"{100 * near:.0f}% of the points near the centre, cameras' widest azimuth gap {gap:.0f}°"
    if gap <= OBJECT_MAX_GAP and near >= OBJECT_POINT_FRACTION:
        return "object", what
    return "unbounded", what


def fit_box(points: np.ndarray, poses: np.ndarray, scene_type: str) -> np.ndarray | None:
    """(2, 3) box from the sparse points (M, 3) of a normalised reconstruction, None for
    ``forward`` (whose box comes from the cameras' frustum).

    ``object``: the points' :data:`BOX_PERCENTILES` extent. ``unbounded``: the same over the
    points within the median camera distance of the look-at point (the foreground kept at full
    resolution; the surroundings are contracted). Both grow by :data:`BOX_MARGIN` and are kept
    at least a tenth of the camera distance wide per axis.
    """
    if scene_type == "forward":
        return None
    dist = float(np.median(np.linalg.norm(poses[:, :3, 3], axis=1)))
    pts = points
    if scene_type == "unbounded":
        pts = points[np.linalg.norm(points, axis=1) <= dist]
    if len(pts) < 10:  # too few to trust: the cube that the contraction would use by default
        half = 0.5 * dist
        return np.array([[-half] * 3, [half] * 3])
    lo, hi = np.percentile(pts, BOX_PERCENTILES, axis=0)
    pad = BOX_MARGIN * (hi - lo) + 0.05 * dist * (hi - lo < 0.1 * dist)
    return np.stack([lo - pad, hi + pad])


def pose_errors(estimated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, WorldTransform]:
    """Errors of cameras ``estimated`` (N, 4, 4) against ``truth`` (N, 4, 4), both
    camera-to-world, after aligning the estimated camera centres to the true ones by the best
    similarity (:func:`umeyama`): rotation errors (N,) in degrees, position errors (N,) in the
    truth's units, and the alignment."""
    align = umeyama(estimated[:, :3, 3], truth[:, :3, 3])
    moved = align.apply_poses(estimated)
    rot = rotation_error_deg(moved[:, :3, :3], truth[:, :3, :3])
    pos = np.linalg.norm(moved[:, :3, 3] - truth[:, :3, 3], axis=1)
    return rot, pos, align
