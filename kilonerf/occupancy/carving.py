"""Space carving: which voxels the training cameras see as empty, from the teacher's depth maps.

Used by the occupancy stage's ``keep_unseen`` option (:func:`kilonerf.train.occupancy.add_unseen`):
voxels that no camera sees (behind the teacher's surfaces from every view: interiors,
undersides) carry no evidence of being empty, so empty-space skipping must keep them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from kilonerf.fields.base import RadianceField


@torch.no_grad()
def opaque_depth(
    field: RadianceField,
    origins: Tensor,
    dirs: Tensor,
    near: Tensor,
    far: Tensor,
    step: float,
    transmittance: float = 0.5,
    *,
    chunk_rays: int = 4096,
    block: int = 64,
) -> Tensor:
    """Where each ray's transmittance through ``field`` first drops below ``transmittance``.

    Density is sampled at step centres ``near + (i + 1/2) step`` up to ``far``, ``block``
    samples per ray at a time; rays leave the work set once they have crossed, so the cost is
    about the number of samples in front of the surfaces.

    Args:
        origins, dirs: (N, 3) rays (unit dirs); near, far: (N,) the segment to march.
        step: sample spacing in world units.
    Returns:
        (N,) distance along the ray: the start of the step whose sample crossed (never behind
        the crossing), or inf where the transmittance stays above ``transmittance``.
    """
    tau_max = -math.log(transmittance)
    depth = torch.full((origins.shape[0],), math.inf, device=origins.device)
    offsets = (torch.arange(block, device=origins.device, dtype=origins.dtype) + 0.5) * step
    for r0 in range(0, origins.shape[0], chunk_rays):
        o, d = origins[r0:r0 + chunk_rays], dirs[r0:r0 + chunk_rays]
        t0, t1 = near[r0:r0 + chunk_rays], far[r0:r0 + chunk_rays]
        tau = torch.zeros_like(t0)
        out = depth[r0:r0 + chunk_rays]
        active = torch.nonzero(t1 > t0).squeeze(1)
        start = 0.0
        while active.numel():
            ts = t0[active, None] + start + offsets  # (A, block)
            pts = o[active, None] + ts[..., None] * d[active, None]
            sigma = field.density(pts.reshape(-1, 3)).reshape(ts.shape).float()
            sigma = torch.where(ts < t1[active, None], sigma, torch.zeros_like(sigma))
            cum = tau[active, None] + torch.cumsum(sigma * step, dim=1)
            crossed = cum > tau_max
            hit = crossed.any(dim=1)
            first = crossed.to(torch.uint8).argmax(dim=1)
            out[active[hit]] = ts[hit, first[hit]] - 0.5 * step
            tau[active] = cum[:, -1]
            start += block * step
            active = active[~hit & (t0[active] + start < t1[active])]
    return depth


def min_pool_depth(depth: Tensor, radius: int) -> Tensor:
    """(H, W) -> (H, W): the minimum over each pixel's (2 radius + 1)^2 neighbourhood, so a
    point projecting anywhere in a pixel is compared with the nearest surface around it."""
    if radius <= 0:
        return depth
    return -F.max_pool2d(-depth[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]


def seen_in_front(points: Tensor, pose: Tensor, intrinsics: Tensor, depth: Tensor, margin: float, near: float) -> Tensor:
    """Which points one camera sees as empty space: they project inside its image, lie beyond
    ``near`` and are more than ``margin`` in front of its (pooled) depth map.

    Args:
        points: (N, 3) world; pose: (4, 4) camera-to-world (OpenGL axes); intrinsics: (4,)
        fx, fy, cx, cy; depth: (H, W) distance along each pixel's ray.
    Returns:
        bool (N,).
    """
    rel = points - pose[:3, 3]
    cam = rel @ pose[:3, :3]  # R^T (p - o): camera axes x right, y up, looking along -z
    z = -cam[:, 2]
    fx, fy, cx, cy = intrinsics.unbind(0)
    safe_z = z.clamp_min(1e-9)
    u = fx * cam[:, 0] / safe_z + cx
    v = cy - fy * cam[:, 1] / safe_z
    h, w = depth.shape
    inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    d = depth[v.long().clamp(0, h - 1), u.long().clamp(0, w - 1)]
    dist = rel.norm(dim=1)
    return inside & (dist - margin > near) & (dist + margin < d)


@torch.no_grad()
def unseen_voxels(
    candidates: Tensor,
    bbox: Tensor,
    poses: Tensor,
    intrinsics: Tensor,
    depths: list[Tensor],
    near: float,
    *,
    chunk: int = 1 << 20,
    progress: bool = True,
) -> Tensor:
    """Space carving: the ``candidates`` that no camera sees as empty space.

    A voxel is seen empty when, for some camera, it lies entirely (centre distance plus half
    its diagonal) in front of that camera's depth map, min-pooled over the voxel's footprint
    in the image. The others (behind every camera's surfaces, or outside every view) carry no
    evidence of being empty. Each chunk of voxels is tested camera by camera, dropping those
    found empty, so the cost is mostly the voxels that stay unseen.

    Args:
        candidates: bool (X, Y, Z) voxels to test over ``bbox`` (2, 3).
        poses: (C, 4, 4) camera-to-world; intrinsics: (C, 4); depths: C (H, W) depth maps
            (distance along each pixel's ray; inf where nothing was hit).
        near: the cameras' near plane: nothing closer was observed.
    Returns:
        bool (X, Y, Z), a subset of ``candidates``.
    """
    device = candidates.device
    bbox = bbox.to(device=device, dtype=torch.float32)
    res = torch.tensor(candidates.shape, device=device)
    size = (bbox[1] - bbox[0]) / res
    margin = 0.5 * float(size.norm())
    poses = poses.to(device=device, dtype=torch.float32)
    intrinsics = intrinsics.to(device=device, dtype=torch.float32)
    pooled = []
    for pose, intr, depth in zip(poses, intrinsics, depths):
        # Pool over the largest footprint a voxel can have in this image (the box's nearest point).
        closest = torch.maximum(bbox[0] - pose[:3, 3], pose[:3, 3] - bbox[1]).clamp_min(0).norm()
        footprint = float(intr[:2].max()) * margin / max(float(closest), near, 1e-6)
        pooled.append(min_pool_depth(depth.to(device=device, dtype=torch.float32), 1 + math.ceil(footprint)))
    flat = torch.nonzero(candidates.reshape(-1)).squeeze(1)
    out = torch.zeros(candidates.numel(), dtype=torch.bool, device=device)
    yz = int(res[1] * res[2])
    bar = tqdm(total=flat.numel(), desc="carving", unit="voxel", unit_scale=True, disable=not progress)
    for c0 in range(0, flat.numel(), chunk):
        ids = flat[c0:c0 + chunk]
        count = int(ids.numel())
        ijk = torch.stack([ids // yz, (ids // int(res[2])) % int(res[1]), ids % int(res[2])], dim=1)
        centres = bbox[0] + (ijk.float() + 0.5) * size
        for pose, intr, depth in zip(poses, intrinsics, pooled):
            if not ids.numel():
                break
            keep = ~seen_in_front(centres, pose, intr, depth, margin, near)
            ids, centres = ids[keep], centres[keep]
        out[ids] = True
        bar.update(count)
    bar.close()
    return out.reshape(candidates.shape)
