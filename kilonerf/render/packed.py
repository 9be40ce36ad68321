"""Per-ray sums over packed (ragged) samples, flat arrays sorted by ray: segmented prefix
sums, the colour and opacity of each ray from its samples' weights
(:func:`kilonerf.render.volume.composite_weights`), and the distortion loss."""

from __future__ import annotations

import torch
from torch import Tensor


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
