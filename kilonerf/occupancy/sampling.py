"""Empty-space skipping: the fixed-step samples of rays that fall in occupied voxels, packed
into flat arrays sorted by ray (:class:`PackedSamples`). The one sampler behind the fast
renderer's candidates and the grid teacher's march; both are tested against dense sampling
with an occupancy mask. Rendering and training a grid field on the CPU are bound by the
number of evaluated samples, which is why the empty ones are never made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from kilonerf.occupancy.grid import OccupancyGrid

COARSE_FACTOR = 8
"""Fine voxels per coarse skip cell per axis (:meth:`OccupancyGrid.coarse_skip_grid`)."""


@dataclass
class PackedSamples:
    """The one flat representation of samples along rays: ray-major, ascending along each ray.
    :func:`march_occupied` makes it; :func:`kilonerf.render.volume.composite_weights` and
    ``kilonerf/render/packed.py`` consume its arrays."""

    ray_id: Tensor
    """(M,) int64 ray of each sample, non-decreasing."""
    t: Tensor
    """(M,) distance along the ray."""
    points: Tensor
    """(M, 3) world positions."""
    num_rays: int
    counts: Tensor | None = None
    """(num_rays,) samples per ray, where the sampler counted them."""


def march_occupied(
    origins: Tensor, dirs: Tensor, t_base: Tensor, step: Tensor, k_lo: Tensor, count: Tensor,
    occupancy: OccupancyGrid | None, within: Callable[[list[Tensor]], Tensor] | None = None,
    coarse_factor: int = COARSE_FACTOR, max_points: int = 1 << 20,
) -> PackedSamples:  # fmt: skip
    """The samples of each ray that lie in occupied voxels (and ``within``), ray by ray.

    Sample ``k`` of ray ``r`` (``k_lo[r] <= k < k_lo[r] + count[r]``) sits at
    ``t = t_base[r] + k * step[r]``; callers place samples through these (uniform render-time
    samples: ``t_base = near``; a jittered march: ``t_base = near + u * step``). Each ray's range
    is cut into runs of G consecutive samples. With occupancy, a run is dropped at once if its
    first point lies in a False cell of :meth:`~OccupancyGrid.coarse_skip_grid` (G is chosen so
    that a run spans at most 0.9 of a coarse cell, so this is exact); the surviving runs'
    samples are then tested voxel by voxel.

    Args:
        origins, dirs: (N, 3) rays.
        t_base, step: (N,) distance of sample 0 and between samples.
        k_lo, count: (N,) int64 first sample index and number of samples to consider.
        occupancy: the voxels to keep samples in, or None to keep every sample ``within``.
        within: optional columns (x, y, z) -> bool: a further condition (e.g. inside a box).
        max_points: samples considered at a time (bounds memory).
    Returns:
        :class:`PackedSamples` with ``counts``.
    """
    if occupancy is None and within is None:
        raise ValueError("march_occupied: needs an occupancy grid or a 'within' condition")
    n, device = origins.shape[0], origins.device
    run = 8
    coarse = None
    if occupancy is not None:
        cell = occupancy.voxel_size.to(origins) * coarse_factor
        max_step = float(step.max()) if n else 0.0
        run = int(0.9 * float(cell.min()) / max_step) + 1 if max_step > 0 else int(count.max()) if n else 1
        run = max(1, min(run, int(count.max()) if n else 1))
        coarse = occupancy.coarse_skip_grid(coarse_factor).to(device)
        dims = coarse.shape
        coarse_flat = coarse.reshape(-1)
        # Coarse-cell coordinates (ring included) of sample k: a + k * b, per ray (one row per axis).
        a = ((origins + t_base[:, None] * dirs - occupancy.bbox.to(origins)[0]) / cell + 1.0).t().contiguous()
        b = (step[:, None] * dirs / cell).t().contiguous()
    runs = (count + run - 1) // run
    k_end = k_lo + count
    # Sub-batches of whole rays with about max_points samples each.
    ends = torch.cumsum(runs * run, 0)
    total = int(ends[-1]) if n else 0
    cut = torch.searchsorted(ends, torch.arange(max_points, total + max_points, max_points, device=device))
    bounds = sorted({0, *cut.clamp_max(n).tolist(), n})
    offsets = torch.arange(run, device=device)
    o_cols, d_cols = origins.t().contiguous(), dirs.t().contiguous()
    rays, ts, points, counts = [], [], [], []
    # Per-axis columns throughout: (N, 3)-with-(3,) elementwise ops are several times slower.
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        nr = runs[r0:r1]
        ray = torch.repeat_interleave(torch.arange(r0, r1, device=device), nr)
        first = torch.repeat_interleave(torch.cumsum(nr, 0) - nr, nr)
        k0 = k_lo.index_select(0, ray) + (torch.arange(ray.shape[0], device=device) - first) * run
        if coarse is not None:
            k0f = k0.to(a.dtype)
            ok = torch.ones_like(k0, dtype=torch.bool)
            flat = torch.zeros_like(k0)
            for axis in range(3):
                c = torch.floor(a[axis].index_select(0, ray) + k0f * b[axis].index_select(0, ray)).to(torch.int64)
                ok &= (c >= 0) & (c < dims[axis])
                flat = flat * dims[axis] + c.clamp_(0, dims[axis] - 1)
            ok &= coarse_flat.index_select(0, flat)
            live = ok.nonzero()[:, 0]
            ray, k0 = ray.index_select(0, live), k0.index_select(0, live)
        k = k0[:, None] + offsets  # (R, run)
        valid = k < k_end.index_select(0, ray)[:, None]
        # Same arithmetic as volume.uniform_samples (t_base = near), so points match dense sampling bit for bit.
        t = t_base.index_select(0, ray)[:, None] + k.to(t_base.dtype) * step.index_select(0, ray)[:, None]
        cols = [o.index_select(0, ray)[:, None] + t * d.index_select(0, ray)[:, None] for o, d in zip(o_cols, d_cols)]
        keep = valid if occupancy is None else valid & occupancy.lookup(cols)
        if within is not None:
            keep &= within(cols)
        sel = keep.reshape(-1).nonzero()[:, 0]
        ray_of = ray[:, None].expand(-1, run).reshape(-1).index_select(0, sel)
        rays.append(ray_of)
        ts.append(t.reshape(-1).index_select(0, sel))
        points.append(torch.stack([c.reshape(-1).index_select(0, sel) for c in cols], dim=1))
        counts.append(torch.bincount(ray_of - r0, minlength=r1 - r0))
    if not rays:
        return PackedSamples(k_lo.new_zeros(0), t_base.new_zeros(0), origins.new_zeros(0, 3), n, torch.zeros_like(count))
    return PackedSamples(torch.cat(rays), torch.cat(ts), torch.cat(points), n, torch.cat(counts))
