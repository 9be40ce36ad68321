"""Sampling rays where an occupancy bitfield says the scene is: fixed-step samples that fall
in occupied cells, packed into flat arrays sorted by ray (composited by
``kilonerf/render/packed.py``). Training a grid field on the CPU is bound by the number of
evaluated samples, which is why the empty ones are never made."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PackedSamples:
    """The one flat representation of samples along rays: ray-major, ascending along each ray.
    Samplers make it (:func:`march_occupied`, the fast renderer's candidate search); the packed
    compositing of ``kilonerf/render/packed.py`` consumes its arrays."""

    ray_id: Tensor
    """(M,) int64 ray of each sample, non-decreasing."""
    t: Tensor
    """(M,) distance along the ray."""
    points: Tensor
    """(M, 3) world positions."""
    num_rays: int
    counts: Tensor | None = None
    """(num_rays,) samples per ray, where the sampler counted them."""


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
