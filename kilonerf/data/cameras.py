"""Pinhole cameras to rays, and ray / box intersection."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def pixel_coords(height: int, width: int, corner: bool = False, device: torch.device | str = "cpu") -> Tensor:
    """(H*W, 2) float32 pixel positions (x, y), row-major.

    Pixel centres (``+0.5``) by default; ``corner=True`` gives the integer corner positions the
    original NeRF / KiloNeRF code used.
    """
    offset = 0.0 if corner else 0.5
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device) + offset,
        torch.arange(width, dtype=torch.float32, device=device) + offset,
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def camera_rays(pose: Tensor, intrinsics: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Rays through ``pixels`` of one or many cameras.

    Args:
        pose: (4, 4) or (N, 4, 4) camera-to-world, OpenGL axes (+y up, looking along -z).
        intrinsics: (4,) or (N, 4) fx, fy, cx, cy.
        pixels: (N, 2) pixel positions (x right, y down), e.g. from :func:`pixel_coords`.
    Returns:
        origins (N, 3) and unit directions (N, 3), in world coordinates.
    """
    pose = pose.to(pixels.dtype)
    intrinsics = intrinsics.to(pixels.dtype)
    fx, fy, cx, cy = intrinsics.unbind(-1)
    x = (pixels[:, 0] - cx) / fx
    y = -(pixels[:, 1] - cy) / fy
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
    rot = pose[..., :3, :3]
    if rot.dim() == 2:
        dirs = d_cam @ rot.T
        origins = pose[:3, 3].expand_as(dirs)
    else:
        dirs = torch.einsum("nij,nj->ni", rot, d_cam)
        origins = pose[:, :3, 3]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return origins.contiguous(), dirs


def ray_box_intersect(origins: Tensor, dirs: Tensor, bbox: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test of rays against an axis-aligned box.

    Args:
        origins, dirs: (N, 3).
        bbox: (2, 3) min and max corners.
    Returns:
        t_near (N,), t_far (N,) clamped so that t_near >= 0, and hit (N,) bool where the ray
        meets the box in front of its origin (t_far > t_near).
    """
    bbox = bbox.to(origins)
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    inv = 1.0 / safe
    t0 = (bbox[0] - origins) * inv
    t1 = (bbox[1] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    hit = t_far > t_near
    return t_near, t_far, hit


def clip_to_box(origins: Tensor, dirs: Tensor, bbox: Tensor, near: Tensor, far: Tensor) -> tuple[Tensor, Tensor]:
    """(N,) near and far of rays (N, 3) cut to their part inside ``bbox`` (2, 3); a ray that
    misses it, or whose [near, far] does not meet it, gets an empty segment (far == near)."""
    t0, t1, hit = ray_box_intersect(origins, dirs, bbox)
    lo = torch.maximum(t0, near)
    hi = torch.minimum(t1, far)
    return lo, torch.where(hit & (hi > lo), hi, lo)


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3), up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world at ``eye`` looking at ``target`` (-z forward, +y up).

    ``up`` only fixes the roll; when the view is parallel to it another axis stands in, so a
    camera straight above the target still gets a valid pose.
    """
    eye = np.asarray(eye, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-9 * np.linalg.norm(up):
        right = np.cross(fwd, np.eye(3)[np.argmin(np.abs(fwd))])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(right, fwd), -fwd, eye
    return pose
