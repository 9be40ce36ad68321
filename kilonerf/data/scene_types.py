"""Scene types: how the space a capture sees maps into the box that the teacher, the network
grid and the occupancy grid live in. Rays are made in world space; every renderer maps them
through :func:`field_rays` into the fields' space, so every stage works in the mapped space.

- ``object``: the box itself (the paper's setting; no mapping).
- ``unbounded``: 360° captures: a foreground box with the rest of space contracted around it
  (:mod:`kilonerf.data.contraction`); a ray becomes a few straight pieces.
- ``forward``: forward-facing captures (LLFF) in normalised device coordinates, as NeRF does.
  The world is first moved into the cameras' average frame (looking down -z) and scaled so
  that the nearest depth bound sits at 1 / 0.75; then the frustum from the plane z = -1 to
  infinity becomes z' in [-1, 1], linear in disparity. The map is projective, so rays stay
  straight: a ray's NDC origin and direction are computed once and everything downstream
  (box intersection, fixed-step sampling, empty-space skipping) is exact. Samples spaced
  evenly in NDC are spaced evenly in disparity, dense near the cameras where detail is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from kilonerf.data.cameras import camera_rays
from kilonerf.data.contraction import OUTER, ContractionMap
from kilonerf.data.scene import FieldRays, RayMap, Scene
from kilonerf.errors import SceneError
from kilonerf.names import SCENE_TYPES

FORWARD_MAX_ANGLE = 45.0
"""Degrees: every camera looks within this of the cameras' mean viewing direction -> forward."""
FORWARD_MAX_RAY_ANGLE = 80.0
"""Degrees: no pixel ray of a ``forward`` scene may be further than this from the mean view."""
NEAR_MARGIN = 0.75
"""NeRF's LLFF rescaling: the nearest depth bound lands at 1 / 0.75 beyond the NDC near plane at 1."""
UNBOUNDED_INNER_FRACTION = 0.5
"""Half-size of an ``unbounded`` scene's foreground cube, as a fraction of the median camera
distance to the point the cameras look at (when the data gives no box)."""


@dataclass(frozen=True)
class NDCMap:
    """World rays -> unit rays in normalised device coordinates (see the module docstring)."""

    rotation: np.ndarray
    """(3, 3) columns: the reference frame's right, up and backwards axes in world coordinates."""
    centre: np.ndarray
    """(3,) the reference frame's origin in world coordinates."""
    scale: float
    """World units -> reference units."""
    focal: tuple[float, float]
    """fx / cx and fy / cy of the cameras (2 f / W in NeRF's notation)."""

    def _frame(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """The rotation (3, 3) and centre (3,) as tensors of ``like``'s dtype and device."""
        return (torch.as_tensor(self.rotation, dtype=like.dtype, device=like.device),
                torch.as_tensor(self.centre, dtype=like.dtype, device=like.device))  # fmt: skip

    def map_rays(self, origins: Tensor, dirs: Tensor) -> FieldRays:
        """World rays (N, 3) -> one piece each: NDC origins on the near plane z' = -1, unit NDC
        directions, from 0 to z' = 1 (infinity)."""
        o, d, length = self.ndc_rays(origins, dirs)
        return FieldRays(o.contiguous(), d.contiguous(), torch.zeros_like(length), length, 1)

    def ndc_rays(self, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """World rays (N, 3) -> NDC origins (N, 3), unit NDC directions (N, 3) and the distance
        (N,) along them to z' = 1."""
        rot, centre = self._frame(origins)
        o = (origins - centre) @ rot * self.scale
        d = dirs @ rot
        # Rays must point into the scene (-z); a ray grazing the near plane is clamped.
        dz = d[:, 2].clamp_max(-1e-6)
        o = o + ((-1.0 - o[:, 2]) / dz)[:, None] * torch.stack([d[:, 0], d[:, 1], dz], dim=1)
        ox, oy, oz = o.unbind(1)
        fx, fy = self.focal
        o_ndc = torch.stack([-fx * ox / oz, -fy * oy / oz, 1.0 + 2.0 / oz], dim=1)
        d_ndc = torch.stack([-fx * (d[:, 0] / dz - ox / oz), -fy * (d[:, 1] / dz - oy / oz), -2.0 / oz], dim=1)
        length = d_ndc.norm(dim=1)
        return o_ndc, d_ndc / length[:, None], length

    def voxel_mask(self, bbox: Tensor, res: tuple[int, int, int]) -> None:
        """None: every voxel of the NDC box can be seen (see :class:`~kilonerf.data.scene.RayMap`)."""
        return None

    def map_points(self, points: Tensor) -> Tensor:
        """World points (N, 3) in front of the near plane -> NDC points (N, 3)."""
        rot, centre = self._frame(points)
        x, y, z = ((points - centre) @ rot * self.scale).unbind(1)
        fx, fy = self.focal
        return torch.stack([-fx * x / z, -fy * y / z, 1.0 + 2.0 / z], dim=1)

    def unmap_points(self, ndc: Tensor) -> Tensor:
        """NDC points (N, 3) with z' < 1 -> world points (N, 3) (inverse of :meth:`map_points`)."""
        rot, centre = self._frame(ndc)
        z = 2.0 / (ndc[:, 2] - 1.0)
        fx, fy = self.focal
        ref = torch.stack([-ndc[:, 0] * z / fx, -ndc[:, 1] * z / fy, z], dim=1)
        return ref / self.scale @ rot.T + centre


def viewing_spread(poses: np.ndarray) -> float:
    """Largest angle in degrees between a camera's viewing direction and the mean one."""
    fwd = -poses[:, :3, 2]
    mean = fwd.sum(0)
    norm = np.linalg.norm(mean)
    if norm < 1e-9:
        return 180.0
    cos = np.clip(fwd @ (mean / norm), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos.min())))


def detect_scene_type(scene: Scene) -> str:
    """``object`` when the photos have alpha (an object on a transparent background); else
    ``forward`` when every camera looks within :data:`FORWARD_MAX_ANGLE` of the mean direction,
    ``object`` when the data gives a box, and ``unbounded`` for cameras around the scene."""
    if scene.alphas is not None:
        return "object"
    if viewing_spread(scene.poses) <= FORWARD_MAX_ANGLE:
        return "forward"
    return "object" if scene.box_given else "unbounded"


def look_at_point(poses: np.ndarray) -> np.ndarray:
    """(3,) the point closest (least squares) to every camera's optical axis; the cameras'
    mean position when that point is not in front of most of them (cameras looking outwards)."""
    centres, fwd = poses[:, :3, 3], -poses[:, :3, 2]
    fwd = fwd / np.linalg.norm(fwd, axis=1, keepdims=True)
    proj = np.eye(3)[None] - fwd[:, :, None] * fwd[:, None, :]  # projections off each axis
    a, b = proj.sum(0), np.einsum("nij,nj->i", proj, centres)
    point = np.linalg.lstsq(a, b, rcond=None)[0]
    if not np.isfinite(point).all() or np.mean(np.einsum("ni,ni->n", point - centres, fwd) > 0) < 0.5:
        return centres.mean(0)
    return point


def contraction_map(scene: Scene) -> ContractionMap:
    """The contraction of an ``unbounded`` scene: the data's box as the foreground when it
    gives one, else a cube around the point the cameras look at, of half-size
    :data:`UNBOUNDED_INNER_FRACTION` times the median camera distance to it."""
    if scene.box_given:
        return ContractionMap(scene.bbox.mean(0), (scene.bbox[1] - scene.bbox[0]) / 2.0, 0.0)
    focus = look_at_point(scene.poses)
    dist = float(np.median(np.linalg.norm(scene.poses[:, :3, 3] - focus, axis=1)))
    half = UNBOUNDED_INNER_FRACTION * dist if dist > 0 else 1.0
    return ContractionMap(focus, np.full(3, half), 0.0)


def ndc_map(scene: Scene) -> NDCMap:
    """The NDC map of a forward-facing scene: the cameras' average frame, scaled so that the
    scene's near depth lands at 1 / :data:`NEAR_MARGIN`."""
    poses = scene.poses
    centre = poses[:, :3, 3].mean(0)
    back = poses[:, :3, 2].sum(0)
    back /= np.linalg.norm(back)
    right = np.cross(poses[:, :3, 1].sum(0), back)
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(back, right), back], axis=1)
    fx, fy, cx, cy = scene.intrinsics[0]
    return NDCMap(rotation, centre, 1.0 / (NEAR_MARGIN * scene.near), (float(fx / cx), float(fy / cy)))


def _corner_rays(scene: Scene) -> tuple[Tensor, Tensor]:
    """World rays through the four image corners of every camera (bounds of all pixel rays)."""
    origins, dirs = [], []
    for i in range(len(scene)):
        h, w = scene.image_size(i)
        px = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], dtype=torch.float64)
        o, d = camera_rays(torch.as_tensor(scene.poses[i]), torch.as_tensor(scene.intrinsics[i]), px)
        origins.append(o)
        dirs.append(d)
    return torch.cat(origins), torch.cat(dirs)


def apply_scene_type(scene: Scene, scene_type: str = "auto") -> Scene:
    """The scene with its type resolved (``auto`` detects it) and, for ``forward``, its box,
    near and far given in the fields' space (NDC, contracted) and its ray map set.

    Raises:
        SceneError: an unknown type, or ``forward`` for cameras that look in all directions.
    """
    if scene_type not in ("auto", *SCENE_TYPES):
        raise SceneError(scene.root or "scene", f"unknown scene type '{scene_type}' (have: auto, {', '.join(SCENE_TYPES)})")
    kind = detect_scene_type(scene) if scene_type == "auto" else scene_type
    if kind == "object":
        return replace(scene, scene_type="object", ray_map=None)
    # Every pixel of a forward-facing or 360° capture sees a surface (nothing lies beyond
    # infinity), so the photos are fully opaque: a teacher that fits the alpha (its mask loss)
    # cannot explain dark pixels by letting the black background show through haze, which
    # fitted the training views but not the held-out ones, and left rays too transparent for
    # early termination.
    opaque = scene.alphas or [np.full(im.shape[:2], 255, np.uint8) for im in scene.images]
    if kind == "unbounded":
        box = np.array([[-OUTER] * 3, [OUTER] * 3])
        # No piece is longer than the diagonal of the cube [-1, 1]^3 (the slabs' are shorter).
        far = 2.0 * math.sqrt(3.0) * (1.0 + 1e-6)
        return replace(scene, bbox=box, near=0.0, far=far, scene_type="unbounded", ray_map=contraction_map(scene),
                       alphas=opaque)  # fmt: skip
    mapping = ndc_map(scene)
    world_o, world_d = _corner_rays(scene)
    # Every pixel ray must head into the scene (-z of the cameras' average frame), with margin.
    if float((world_d @ torch.as_tensor(mapping.rotation))[:, 2].max()) > -math.cos(math.radians(FORWARD_MAX_RAY_ANGLE)):
        spread = viewing_spread(scene.poses)
        raise SceneError(scene.root or "scene", f"scene type 'forward' needs cameras that look one way, but their "
                         f"viewing directions spread {spread:.0f} degrees from the mean; use --scene-type unbounded or object")
    o, d, length = mapping.ndc_rays(world_o, world_d)
    ends = torch.cat([o, o + length[:, None] * d]).numpy()
    lo, hi = ends.min(0), ends.max(0)
    pad = 0.01 * (hi - lo)
    bbox = np.stack([lo - pad, hi + pad])
    bbox[:, 2] = (-1.0, 1.0)
    far = float(length.max()) * (1.0 + 1e-6)
    if not math.isfinite(far) or not np.isfinite(bbox).all():
        raise SceneError(scene.root or "scene", "the cameras do not fit a forward-facing (NDC) mapping")
    return replace(scene, bbox=bbox, near=0.0, far=far, scene_type="forward", ray_map=mapping, alphas=opaque)


def field_rays(ray_map: RayMap | None, origins: Tensor, dirs: Tensor, near: float, far: float) -> FieldRays:
    """World rays (N, 3) (unit ``dirs``) in the space of a scene's fields, given its
    ``ray_map``: for ``object`` (None) the rays themselves from ``near`` to ``far`` (the
    scene's), else the map's pieces."""
    if ray_map is None:
        n = origins.shape[0]
        return FieldRays(origins, dirs, origins.new_full((n,), float(near)), origins.new_full((n,), float(far)), 1)
    return ray_map.map_rays(origins, dirs)
