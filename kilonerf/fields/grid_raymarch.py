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
    k = torch.arange(ray_id.shape[0], device=origins.device) - first.index_select(0, ray_id)
    # Candidates are tested in cell coordinates from one gathered per-ray table
    # [origin_cell (3), dir_cell (3), t0] laid out channel-first, so every op below runs on
    # contiguous 1D arrays; world positions are formed only for the survivors.
    cz, cy, cx = occupancy.shape
    cells = torch.tensor([cx, cy, cz], dtype=origins.dtype, device=origins.device)
    scale = cells / (box_max - box_min)
    t0 = near + u * step
    table = torch.cat([((origins - box_min) * scale).t(), (dirs * scale).t(), t0[None]], dim=0)
    rows = table.index_select(1, ray_id)  # (7, M)
    t = torch.addcmul(rows[6], k.to(origins.dtype), rows.new_tensor(step))
    keep = torch.ones_like(t, dtype=torch.bool)
    flat = torch.zeros_like(t)
    for axis, stride in ((2, cx * cy), (1, cx), (0, 1)):
        c = torch.addcmul(rows[axis], t, rows[3 + axis]).floor_()
        keep &= (c >= 0) & (c < float(cells[axis]))
        # Cell counts stay far below 2^24, so the flat index is exact in float32.
        flat.add_(c, alpha=stride)
    flat = flat.clamp_(0, occupancy.numel() - 1).long()
    keep &= occupancy.reshape(-1).index_select(0, flat)
    keep_idx = torch.nonzero(keep).squeeze(1)
    ray_k, t_k = ray_id.index_select(0, keep_idx), t.index_select(0, keep_idx)
    points = torch.addcmul(origins.index_select(0, ray_k), t_k[:, None], dirs.index_select(0, ray_k))
    return PackedSamples(ray_k, t_k, points, n)


def segment_exclusive_cumsum(x: Tensor, start: Tensor) -> Tensor:
    """Per-ray exclusive prefix sums of packed values (M,); ``start`` from :func:`segment_starts`.

    One global cumulative sum minus its value at each ray's first sample, accumulated in
    float64 so that long batches (sums in the 1e5 range) keep float32 precision per ray.
    """
    cs = torch.cumsum(x.double(), 0)
    excl = cs - x.double()
    return (excl - excl.index_select(0, start)).to(x.dtype)


def segment_starts(ray_id: Tensor, num_rays: int) -> Tensor:
    """(M,) index of the first sample of each sample's ray (``ray_id`` sorted)."""
    count = torch.bincount(ray_id, minlength=num_rays)
    first = torch.cumsum(count, 0) - count
    return first.index_select(0, ray_id)


def packed_weights(sigma_delta: Tensor, ray_id: Tensor, num_rays: int,
                   start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Compositing weights ``alpha_i * T_i`` of packed samples.

    Args:
        sigma_delta: (M,) optical thickness ``sigma * delta`` of each sample (>= 0).
        ray_id: (M,) sorted ray index of each sample.
        start: optional (M,) :func:`segment_starts` of ``ray_id``, if already computed.
    Returns:
        (M,) weights and (M,) opacities ``alpha_i``, differentiable w.r.t. ``sigma_delta``.
    """
    if sigma_delta.numel() == 0:
        return sigma_delta, sigma_delta
    if start is None:
        start = segment_starts(ray_id, num_rays)
    trans = torch.exp(-segment_exclusive_cumsum(sigma_delta, start))
    alpha = -torch.expm1(-sigma_delta)
    return alpha * trans, alpha


def packed_composite(weights: Tensor, rgb: Tensor, ray_id: Tensor, num_rays: int,
                     background: Tensor | None, acc_weights: Tensor | None = None,
                     acc_ray_id: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum weighted colours per ray and add the background behind the remaining transmittance.

    Args:
        weights: (K,) weights of the samples whose colour is given.
        rgb: (K, 3) their colours.
        ray_id: (K,) their rays.
        background: (3,), per ray (num_rays, 3), or None (black).
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


def packed_distortion(weights: Tensor, t: Tensor, delta: float, ray_id: Tensor, num_rays: int,
                      start: Tensor | None = None) -> Tensor:
    """Mip-NeRF 360's distortion loss of each ray, for packed samples.

    ``sum_ij w_i w_j |t_i - t_j| + 1/3 sum_i w_i^2 delta`` computed in O(M) from per-ray
    prefix sums (``t`` ascends within a ray): the double sum equals
    ``2 sum_i w_i (t_i W_<i - (w t)_<i)``.

    Args:
        weights, t: (M,) compositing weights and sample distances, sorted by ray.
        delta: the (uniform) step length.
        start: optional :func:`segment_starts` of ``ray_id``.
    Returns:
        (num_rays,) loss per ray (zero for rays without samples).
    """
    if weights.numel() == 0:
        return weights.new_zeros(num_rays)
    if start is None:
        start = segment_starts(ray_id, num_rays)
    w_before = segment_exclusive_cumsum(weights, start)
    wt_before = segment_exclusive_cumsum(weights * t, start)
    per_sample = 2.0 * weights * (t * w_before - wt_before) + weights.square() * (delta / 3.0)
    return weights.new_zeros(num_rays).index_add(0, ray_id, per_sample)
