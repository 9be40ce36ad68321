"""KiloNeRF's fast renderer: empty-space skipping, early ray termination, grouped evaluation.

Samples sit where :func:`kilonerf.render.dense.render_dense` (``sampling="uniform"``) puts
them: ``num_samples`` points from near to far inclusive. What differs is which are evaluated:

1. Candidates: per ray, only the sample range inside the box around the occupied voxels
   (or the network grid's box without occupancy) is considered. That range is cut into runs
   of a few consecutive samples; a run whose start lies in an empty cell of a dilated coarse
   occupancy grid is dropped whole, and the samples of the other runs are tested voxel by
   voxel. Samples in occupied voxels (and inside the network grid) are kept, as a compact
   per-ray list. The result is exactly ``render_dense(..., sample_mask=occupancy.lookup)``'s
   set of contributing samples: the coarse test is conservative and sample positions are
   computed with the same arithmetic as :func:`kilonerf.render.volume.uniform_samples`.
2. Passes: every active ray takes its next ``samples_per_pass`` candidates; all of them are
   evaluated in one grouped backend call and composited front to back. A ray leaves when its
   transmittance drops to ``ert_threshold`` or its candidates run out. On this (torch) path
   the pass size doubles every pass up to ``MAX_PASS_SAMPLES``: most rays end in the first
   passes, and the few that remain would otherwise pay a pass's fixed cost for a handful of
   samples each time (lego_100 at 100 px: 18 passes of 8 -> 6 passes, 9% more samples
   evaluated, faster overall; ``benchmarks/torch_render.py``).

Everything is vectorised across rays; the Python loops run over passes and over chunks of
rays / candidate sub-batches that bound memory. With the compiled ``cpu`` backend the same
procedure runs in the backend's fused renderer instead (:mod:`kilonerf.kernels.fused`; the ``cpu``
backend's is C, :mod:`kilonerf.kernels.cpu_render`), candidates found lazily
while marching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kilonerf.data.cameras import ray_box_intersect
from kilonerf.fields.multinet import MultiNetField, activate_density
from kilonerf.kernels import GroupedBackend, get_backend
from kilonerf.kernels.fused import FusedGrid, FusedOccupancy, FusedRays, FusedRenderer, FusedResult
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.occupancy.sampling import COARSE_FACTOR, march_occupied
from kilonerf.render.volume import composite_weights

MAX_PASS_SAMPLES = 64
"""Largest number of candidates a ray takes in one pass on the torch path."""


@dataclass
class FastRenderOutput:
    rgb: Tensor
    """(N, 3) composited colour, background included."""
    depth: Tensor
    """(N,) expected distance (weights times t)."""
    acc: Tensor
    """(N,) accumulated opacity (sum of weights)."""
    samples_evaluated: int
    """Samples the backend evaluated."""
    samples_candidate: int
    """Samples that passed empty-space skipping (evaluated or not); -1 if not counted."""
    passes: int
    """Evaluation passes, summed over ray chunks (tiles on the native path)."""
    profile: dict[str, float] | None = None
    """Native path only: thread-seconds per phase (march, sort, mlp, composite)."""


@torch.no_grad()
def render_fast(
    field: MultiNetField,
    occupancy: OccupancyGrid | None,
    origins: Tensor,
    dirs: Tensor,
    near: Tensor | float,
    far: Tensor | float,
    num_samples: int = 384,
    background: Tensor | None = None,
    backend: str | GroupedBackend | None = None,
    ert_threshold: float = 0.01,
    samples_per_pass: int = 8,
    use_occupancy: bool = True,
    ray_chunk: int = 1 << 15,
    count_candidates: bool = True,
    density_activation: str = "relu",
    step: float | None = None,
) -> FastRenderOutput:
    """Render rays through a grid of tiny MLPs.

    Args:
        field: the student.
        occupancy: grid for empty-space skipping (ignored, may be None, when ``use_occupancy``
            is False).
        origins, dirs: (N, 3), dirs unit length. near, far: (N,) or scalars.
        num_samples: samples per ray, step (far - near) / (num_samples - 1).
        background: (3,) colour or None (black).
        backend: grouped-evaluation backend name or instance (default: the field's).
        ert_threshold: a ray stops once its transmittance is <= this (0 disables).
        samples_per_pass: candidates each active ray takes per pass (the first pass on the
            torch path, doubling every pass up to ``MAX_PASS_SAMPLES``).
        ray_chunk: rays rendered together (bounds memory; larger chunks batch better); the
            native path tiles rays by itself.
        count_candidates: the native path finds candidates while marching, so counting those
            behind an early termination costs extra marching; False skips that and reports
            ``samples_candidate`` as -1 (the torch path always counts).
        density_activation: raw density -> sigma (:func:`~kilonerf.fields.multinet.activate_density`).
        step: a fixed distance between samples instead: samples at ``near + k * step`` up to
            ``far`` (rays of different lengths, such as the pieces of
            :class:`~kilonerf.data.scene.FieldRays`, are then sampled alike).
    Returns:
        :class:`FastRenderOutput`.
    """
    n = origins.shape[0]
    dtype = field.bbox.dtype
    origins, dirs = origins.to(dtype), dirs.to(dtype)
    near_t = torch.as_tensor(near, dtype=dtype, device=origins.device).expand(n).contiguous()
    far_t = torch.as_tensor(far, dtype=dtype, device=origins.device).expand(n).contiguous()
    if use_occupancy and occupancy is None:
        raise ValueError("render_fast: use_occupancy=True needs an occupancy grid")
    if samples_per_pass < 1:
        raise ValueError(f"render_fast: samples_per_pass must be >= 1, got {samples_per_pass}")
    region = _region(field, occupancy if use_occupancy else None)
    be = get_backend(backend or field.backend)
    if step is None:
        step_t = (far_t - near_t) / max(num_samples - 1, 1)
        k_max = torch.full_like(near_t, num_samples - 1, dtype=torch.int64)
    else:
        step_t = torch.full_like(near_t, float(step))
        # The small slack keeps the sample at far when rounding puts it a hair beyond; an empty
        # range (far <= near: an unused piece) has no sample at all.
        k_max = torch.floor((far_t - near_t) / float(step) + 1e-6).to(torch.int64)
        k_max = torch.where(far_t > near_t, k_max, torch.full_like(k_max, -1))
    # The backend's fused march-evaluate-composite loop where it has one (asked, not assumed).
    fused = None
    if region is not None and n > 0 and dtype == torch.float32:
        fused = be.fused_renderer(field.params(), origins.device)
    if fused is not None:
        k_lo, count = _sample_range(region, origins, dirs, near_t, step_t, k_max)  # type: ignore[arg-type]
        rays = FusedRays(origins, dirs, near_t, step_t, k_lo, count)
        res = render_fused(fused, field, occupancy if use_occupancy else None, rays, ert_threshold, samples_per_pass,
                           count_candidates, density_activation)  # fmt: skip
        rgb = res.rgb if background is None else res.rgb + (1.0 - res.acc[:, None]) * background.to(res.rgb)
        return FastRenderOutput(rgb=rgb, depth=res.depth, acc=res.acc, samples_evaluated=res.evaluated,
                                samples_candidate=res.candidates, passes=res.passes, profile=res.seconds)  # fmt: skip
    outs = []
    for lo in range(0, n, ray_chunk):
        sl = slice(lo, min(lo + ray_chunk, n))
        outs.append(
            _render_chunk(
                field, occupancy if use_occupancy else None, region, be,
                origins[sl], dirs[sl], near_t[sl], step_t[sl], k_max[sl],
                ert_threshold, samples_per_pass, density_activation,
            )
        )
    rgb = torch.cat([o[0] for o in outs]) if outs else origins.new_zeros(0, 3)
    depth = torch.cat([o[1] for o in outs]) if outs else origins.new_zeros(0)
    acc = torch.cat([o[2] for o in outs]) if outs else origins.new_zeros(0)
    if background is not None:
        rgb = rgb + (1.0 - acc[:, None]) * background.to(rgb)
    return FastRenderOutput(
        rgb=rgb, depth=depth, acc=acc,
        samples_evaluated=sum(o[3] for o in outs),
        samples_candidate=sum(o[4] for o in outs),
        passes=sum(o[5] for o in outs),
    )


def render_fused(
    renderer: FusedRenderer, field: MultiNetField, occupancy: OccupancyGrid | None, rays: FusedRays,
    ert_threshold: float, samples_per_pass: int, count_candidates: bool, density_activation: str = "relu",
    tile_rays: int | None = None,
) -> FusedResult:  # fmt: skip
    """A backend's fused renderer over the student's network grid and occupancy grid (with the
    coarse skip grid of :data:`COARSE_FACTOR` voxels a side); ``rays`` carry their candidate
    ranges (:func:`_sample_range`)."""
    grid = FusedGrid(field.bbox.detach().float(), field.res)
    occ = None
    if occupancy is not None:
        coarse = occupancy.coarse_skip_grid(COARSE_FACTOR)
        occ = FusedOccupancy(occupancy.bits, occupancy.bbox.float(), occupancy.res, coarse,
                             occupancy.voxel_size.float() * COARSE_FACTOR)  # fmt: skip
    return renderer.render(grid, occ, rays, ert_threshold, samples_per_pass, count_candidates, density_activation,
                           tile_rays)  # fmt: skip


def _region(field: MultiNetField, occupancy: OccupancyGrid | None) -> Tensor | None:
    """(2, 3) box outside which no sample can contribute (None: nothing can), padded by half a
    voxel so that rounding at its faces never drops a sample (each is tested exactly later)."""
    box = field.bbox.detach().clone()
    pad = field.grid.cell_size.to(box) * 1e-3
    if occupancy is not None:
        tight = occupancy.occupied_bounds()
        if tight is None:
            return None
        tight = tight.to(box)
        pad = occupancy.voxel_size.to(box) * 0.5
        box = torch.stack([torch.maximum(box[0], tight[0]), torch.minimum(box[1], tight[1])])
        if bool((box[0] > box[1]).any()):
            return None
    return torch.stack([box[0] - pad, box[1] + pad])


def _sample_range(
    region: Tensor, origins: Tensor, dirs: Tensor, near: Tensor, step: Tensor, k_max: Tensor
) -> tuple[Tensor, Tensor]:
    """First sample index and count (N,) per ray whose samples (``near + k * step``, ``0 <= k <=
    k_max``) may fall inside ``region``."""
    t0, t1, hit = ray_box_intersect(origins, dirs, region)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    k_lo = torch.floor((t0 - near) / safe).to(torch.int64) - 1
    k_hi = torch.ceil((t1 - near) / safe).to(torch.int64) + 1
    # ray_box_intersect clamps t0 at 0, so a negative near or a zero step must not clip.
    k_lo = torch.where((near < 0) | (step <= 0), torch.zeros_like(k_lo), k_lo).clamp_min(0)
    k_hi = torch.minimum(torch.where(step <= 0, k_max, k_hi), k_max)
    count = torch.where(hit, (k_hi - k_lo + 1).clamp_min(0), torch.zeros_like(k_hi))
    return k_lo, count


def _render_chunk(
    field: MultiNetField, occupancy: OccupancyGrid | None, region: Tensor | None, backend: GroupedBackend,
    origins: Tensor, dirs: Tensor, near: Tensor, step: Tensor, k_max: Tensor,
    ert_threshold: float, samples_per_pass: int, density_activation: str = "relu",
) -> tuple[Tensor, Tensor, Tensor, int, int, int]:
    """rgb (N, 3) without background, depth (N,), acc (N,), evaluated, candidates, passes."""
    n, device = origins.shape[0], origins.device
    rgb, depth, acc = origins.new_zeros(n, 3), origins.new_zeros(n), origins.new_zeros(n)
    if region is None or n == 0:
        return rgb, depth, acc, 0, 0, 0
    k_lo, count = _sample_range(region, origins, dirs, near, step, k_max)
    grid = field.grid
    same_box = occupancy is not None and torch.equal(occupancy.bbox.to(field.bbox), field.bbox)
    cand = march_occupied(origins, dirs, near, step, k_lo, count, occupancy, None if same_box else grid.inside)
    cand_net, cand_local = field.grid.locate(cand.points)
    counts = cand.counts
    assert counts is not None
    ptr = torch.cumsum(counts, 0) - counts
    end = ptr + counts
    trans = origins.new_ones(n)
    active = (counts > 0).nonzero()[:, 0]
    params = field.params()
    evaluated = passes = 0
    per = samples_per_pass
    while active.numel() > 0:
        passes += 1
        a_ptr, a_end = ptr.index_select(0, active), end.index_select(0, active)
        idx = a_ptr[:, None] + torch.arange(per, device=device)  # (A, P) candidate slots
        slot = (idx < a_end[:, None]).reshape(-1).nonzero()[:, 0]  # flat (A * P) positions of real candidates
        c_idx = idx.reshape(-1).index_select(0, slot)
        ray = cand.ray_id.index_select(0, c_idx)
        row = torch.div(slot, per, rounding_mode="floor")  # each candidate's row among the active rays
        raw, color = backend.evaluate(params, cand_net.index_select(0, c_idx), cand_local.index_select(0, c_idx),
                                      dirs.index_select(0, active), row)  # fmt: skip
        evaluated += int(slot.shape[0])
        tau = activate_density(raw, density_activation) * step.index_select(0, ray)
        # A ray ends at the first sample whose transmittance is <= the threshold, wherever it
        # falls in the pass (the native path does the same), so pass sizes never change the image.
        w, _, t_new = composite_weights(tau, row, active.shape[0], trans_in=trans.index_select(0, active),
                                        threshold=ert_threshold)  # fmt: skip
        rgb.index_add_(0, ray, w[:, None] * color)
        depth.index_add_(0, ray, w * cand.t.index_select(0, c_idx))
        acc.index_add_(0, ray, w)
        trans.index_copy_(0, active, t_new)
        ptr.index_copy_(0, active, a_ptr + per)
        active = active[(a_ptr + per < a_end) & (t_new > ert_threshold)]
        per = max(per, min(2 * per, MAX_PASS_SAMPLES))
    return rgb, depth, acc, evaluated, int(cand.ray_id.shape[0]), passes
