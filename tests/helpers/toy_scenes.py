"""A tiny analytic scene for fast training tests: a coloured sphere seen from a few cameras."""

from __future__ import annotations

import numpy as np
import torch

from kilonerf.data.cameras import camera_rays, pixel_coords
from kilonerf.data.scene import Scene


def look_at(eye: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world pose at ``eye`` looking at the origin, OpenGL axes, +z world up."""
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, eye
    return pose


def sphere_scene(
    num_train: int = 4,
    num_val: int = 2,
    size: int = 16,
    radius: float = 0.6,
    flat: tuple[float, float, float] | None = None,
) -> Scene:
    """Opaque sphere at the origin, white background, box [-1, 1]^3.

    Coloured by its normal, or uniformly ``flat`` (far from the grey an untrained field shows,
    so early training makes a large, reliable drop in loss).
    """
    n = num_train + num_val
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    poses = np.stack([look_at(np.array([3.0 * np.cos(a), 3.0 * np.sin(a), 1.0])) for a in angles])
    focal = size * 1.2
    intrinsics = np.tile([focal, focal, size / 2, size / 2], (n, 1)).astype(np.float64)
    pix = pixel_coords(size, size)
    images = []
    for i in range(n):
        o, d = camera_rays(torch.as_tensor(poses[i]), torch.as_tensor(intrinsics[i]), pix)
        b = (o * d).sum(-1)
        disc = b * b - ((o * o).sum(-1) - radius**2)
        hit = disc > 0
        t = -b - torch.sqrt(disc.clamp_min(0.0))
        normal = (o + t[:, None] * d) / radius
        colour = 0.5 + 0.5 * normal if flat is None else torch.tensor(flat, dtype=normal.dtype).expand_as(normal)
        rgb = torch.where(hit[:, None], colour, torch.ones_like(normal))
        images.append((rgb.clamp(0, 1) * 255).round().to(torch.uint8).reshape(size, size, 3).numpy())
    return Scene(
        images=images,
        intrinsics=intrinsics,
        poses=poses,
        splits={"train": np.arange(num_train), "val": np.arange(num_train, n)},
        bbox=np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]),
        near=1.0,
        far=5.0,
    )
