"""Ray marching through an occupancy bitfield and compositing of packed (ragged) samples.

Training a grid field on CPU is bound by the number of evaluated samples, so rays are marched
with a fixed world-space step and only samples that fall in occupied cells are kept, packed
into flat arrays sorted by ray. Compositing then works on those ragged segments: the
transmittance is an exclusive cumulative sum of ``sigma * delta`` restarted at each ray's first
sample (float64, so long batches do not lose precision), which equals
:func:`kilonerf.render.volume.composite` with the skipped samples given zero opacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PackedSamples:
    ray_id: Tensor
    """(M,) int64 ray of each sample, non-decreasing."""
    t: Tensor
    """(M,) distance along the ray."""
    points: Tensor
    """(M, 3) world positions."""
    num_rays: int


def march_occupied(origins: Tensor, dirs: Tensor, near: Tensor, far: Tensor, step: float,
                   box_min: Tensor, box_max: Tensor, occupancy: Tensor,
                   jitter: Tensor | None = None) -> PackedSamples:
    """Fixed-step samples of rays that land in occupied cells.

    Args:
        origins, dirs: (N, 3) rays, dirs unit length.
        near, far: (N,) segment to march (empty when far <= near).
        step: world distance between samples.
        box_min, box_max: (3,) the box the occupancy grid spans.
        occupancy: (Cz, Cy, Cx) bool cells covering the box.
        jitter: (N,) offsets in [0, 1) of the first sample in units of ``step``; None puts
            samples at ``near + (k + 0.5) * step``.
    Returns:
        :class:`PackedSamples`; every sample has step length ``step``.
    """
    n = origins.shape[0]
    span = (far - near).clamp_min(0.0)
    k_max = int(torch.ceil(span.max() / step).item()) if n > 0 else 0
    if k_max == 0:
        empty = origins.new_zeros(0)
        return PackedSamples(empty.long(), empty, origins.new_zeros(0, 3), n)
    u = jitter if jitter is not None else near.new_full((n,), 0.5)
    # Number of samples each ray gets: k with near + (k + u) * step < far.
    count = torch.ceil((span / step - u).clamp_min(0.0)).long()
    ray_id = torch.repeat_interleave(torch.arange(n, device=origins.device), count)
    first = torch.cumsum(count, 0) - count
    k = torch.arange(ray_id.shape[0], device=origins.device) - first[ray_id]
    t = near[ray_id] + (k.to(near.dtype) + u[ray_id]) * step
    points = origins[ray_id] + t[:, None] * dirs[ray_id]
    cz, cy, cx = occupancy.shape
    cells = torch.tensor([cx, cy, cz], dtype=points.dtype, device=points.device)
    c = ((points - box_min) * (cells / (box_max - box_min))).floor_()
    inside = ((c >= 0) & (c < cells)).all(-1)
    c = c.long()
    flat = ((c[:, 2] * cy + c[:, 1]) * cx + c[:, 0]).clamp_(0, occupancy.numel() - 1)
    keep = inside & occupancy.reshape(-1)[flat]
    return PackedSamples(ray_id[keep], t[keep], points[keep], n)


def segment_starts(ray_id: Tensor, num_rays: int) -> Tensor:
    """(M,) index of the first sample of each sample's ray (``ray_id`` sorted)."""
    count = torch.bincount(ray_id, minlength=num_rays)
    first = torch.cumsum(count, 0) - count
    return first[ray_id]


def packed_weights(sigma_delta: Tensor, ray_id: Tensor, num_rays: int) -> Tensor:
    """Compositing weights ``alpha_i * T_i`` of packed samples.

    Args:
        sigma_delta: (M,) optical thickness ``sigma * delta`` of each sample (>= 0).
        ray_id: (M,) sorted ray index of each sample.
    Returns:
        (M,) weights, differentiable w.r.t. ``sigma_delta``.
    """
    if sigma_delta.numel() == 0:
        return sigma_delta
    cs = torch.cumsum(sigma_delta.double(), 0)
    excl = cs - sigma_delta.double()
    start = segment_starts(ray_id, num_rays)
    trans = torch.exp(-(excl - excl[start])).to(sigma_delta.dtype)
    alpha = -torch.expm1(-sigma_delta)
    return alpha * trans


def packed_composite(weights: Tensor, rgb: Tensor, ray_id: Tensor, num_rays: int,
                     background: Tensor | None, acc_weights: Tensor | None = None,
                     acc_ray_id: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum weighted colours per ray and add the background behind the remaining transmittance.

    Args:
        weights: (K,) weights of the samples whose colour is given.
        rgb: (K, 3) their colours.
        ray_id: (K,) their rays.
        background: (3,) or None (black).
        acc_weights, acc_ray_id: optionally all samples' weights for the opacity (when colour
            was evaluated only on a subset); default ``weights`` / ``ray_id``.
    Returns:
        rgb (num_rays, 3) and accumulated opacity (num_rays,).
    """
    color = rgb.new_zeros(num_rays, 3).index_add(0, ray_id, weights[:, None] * rgb)
    if acc_weights is None:
        acc_weights, acc_ray_id = weights, ray_id
    acc = weights.new_zeros(num_rays).index_add(0, acc_ray_id, acc_weights)
    if background is not None:
        color = color + (1.0 - acc)[:, None] * background.to(color)
    return color, acc
