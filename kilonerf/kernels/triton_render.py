"""The ``triton`` backends' fused renderer: march, grouped evaluation and compositing on the GPU.

It does what :func:`kilonerf.render.fast.render_fast`'s torch path does (same candidates, same
front-to-back compositing, early termination at the same sample) with three kernels per pass
and no host synchronisation inside a block of passes:

1. march (one program per 64 active rays): from each ray's next sample index, step along its
   fixed-step samples, test the occupancy bit of each (and the network grid's box where it is
   not the occupancy grid's) and write the next ``samples_per_pass`` occupied ones (network,
   cell-local position, distance) into that ray's slots; unused slots get the network count
   as a marker. Positions use the torch path's arithmetic op for op (no fused multiply-add,
   IEEE division), so both find the same candidates;
2. the fused tiny-MLP kernel of :mod:`kilonerf.kernels.triton_mlp` over all slots, sorted by
   network on the device (unused slots sort last and belong to no tile);
3. composite (one program per 64 active rays): transmittance, weights, colour, depth and
   opacity accumulate per ray in registers; a ray is done when its transmittance reaches the
   threshold or its samples run out.

The host checks once every :data:`PASSES_PER_SYNC` passes whether rays remain, and then
compacts the list of active rays. Unlike the torch path the pass size stays
``samples_per_pass`` (fixed buffers; the image does not depend on it). Not yet done: the
coarse skip grid (each sample's voxel is tested), and per-phase clocks (``seconds`` is empty:
timing GPU phases would need a synchronisation each).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch import Tensor

from kilonerf.kernels.fused import FusedGrid, FusedOccupancy, FusedRays, FusedRenderer, FusedResult

PASSES_PER_SYNC = 4
"""Passes launched between two checks (one host synchronisation each) for remaining rays."""
RAYS_PER_PROGRAM = 64
SlotEvaluator = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], None]
"""(slot networks, slot positions, ray directions, ray of each slot, raw density out, rgb out):
the tiny-MLP launch (``run_tiny_mlp`` of :mod:`kilonerf.kernels.triton_mlp`, bound to its
parameters and precision)."""
MAX_OPTICAL_THICKNESS = 30.0
"""As :data:`kilonerf.render.volume.MAX_OPTICAL_THICKNESS` (a test checks they agree): tau is
clamped to it."""


@triton.jit
def _cell(p, lo, ext, res):
    """Cell of coordinate ``p`` along one axis of a box (as ``box_cells``) and its ``u``."""
    u = tl.math.div_rn(p - lo, ext) * res  # res: an int (Triton makes a 1 a constant)
    c = tl.minimum(tl.maximum(tl.floor(u).to(tl.int32), 0), res - 1)
    return c, u


@triton.jit
def _march_kernel(
    active_ptr, n_active, origins_ptr, dirs_ptr, near_ptr, step_ptr, k_next_ptr, k_end_ptr, done_ptr,
    occ_bits_ptr, olx, oly, olz, ohx, ohy, ohz, orx, ory, orz,
    glx, gly, glz, ghx, ghy, ghz, grx, gry, grz, num_nets,
    slot_net_ptr, slot_local_ptr, slot_t_ptr, count_ptr,
    S: tl.constexpr, BLOCK: tl.constexpr, USE_OCC: tl.constexpr, CHECK_GRID: tl.constexpr,
    COUNT_ONLY: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = r < n_active
    ray = tl.load(active_ptr + r, mask=live, other=0)
    k = tl.load(k_next_ptr + ray, mask=live, other=0)
    k_end = tl.load(k_end_ptr + ray, mask=live, other=0)
    done = tl.load(done_ptr + ray, mask=live, other=1)
    ox = tl.load(origins_ptr + ray * 3 + 0, mask=live, other=0.0)
    oy = tl.load(origins_ptr + ray * 3 + 1, mask=live, other=0.0)
    oz = tl.load(origins_ptr + ray * 3 + 2, mask=live, other=0.0)
    dx = tl.load(dirs_ptr + ray * 3 + 0, mask=live, other=0.0)
    dy = tl.load(dirs_ptr + ray * 3 + 1, mask=live, other=0.0)
    dz = tl.load(dirs_ptr + ray * 3 + 2, mask=live, other=0.0)
    near = tl.load(near_ptr + ray, mask=live, other=0.0)
    step = tl.load(step_ptr + ray, mask=live, other=0.0)
    if not COUNT_ONLY:
        for s in tl.static_range(S):
            tl.store(slot_net_ptr + r * S + s, num_nets, mask=live)
    filled = tl.zeros([BLOCK], dtype=tl.int32)
    going = live & (done == 0) & (k < k_end)
    while tl.max(going.to(tl.int32), axis=0) > 0:
        t = near + k.to(tl.float32) * step
        px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
        hit = going
        if USE_OCC:
            cx, _ = _cell(px, olx, ohx - olx, orx)
            cy, _ = _cell(py, oly, ohy - oly, ory)
            cz, _ = _cell(pz, olz, ohz - olz, orz)
            hit &= (px >= olx) & (px <= ohx) & (py >= oly) & (py <= ohy) & (pz >= olz) & (pz <= ohz)
            voxel = (cx.to(tl.int64) * ory + cy) * orz + cz
            byte = tl.load(occ_bits_ptr + (voxel >> 3), mask=hit, other=0).to(tl.int32)
            hit &= ((byte >> (7 - (voxel & 7)).to(tl.int32)) & 1) == 1
        if CHECK_GRID:
            hit &= (px >= glx) & (px <= ghx) & (py >= gly) & (py <= ghy) & (pz >= glz) & (pz <= ghz)
        if not COUNT_ONLY:
            gx, ux = _cell(px, glx, ghx - glx, grx)
            gy, uy = _cell(py, gly, ghy - gly, gry)
            gz, uz = _cell(pz, glz, ghz - glz, grz)
            slot = r * S + filled
            tl.store(slot_net_ptr + slot, (gx * gry + gy) * grz + gz, mask=hit)
            tl.store(slot_local_ptr + slot * 3 + 0, tl.minimum(tl.maximum((ux - gx.to(tl.float32)) * 2.0 - 1.0, -1.0), 1.0), mask=hit)
            tl.store(slot_local_ptr + slot * 3 + 1, tl.minimum(tl.maximum((uy - gy.to(tl.float32)) * 2.0 - 1.0, -1.0), 1.0), mask=hit)
            tl.store(slot_local_ptr + slot * 3 + 2, tl.minimum(tl.maximum((uz - gz.to(tl.float32)) * 2.0 - 1.0, -1.0), 1.0), mask=hit)
            tl.store(slot_t_ptr + slot, t, mask=hit)
        filled += hit.to(tl.int32)
        k += going.to(k.dtype)
        going &= k < k_end
        if not COUNT_ONLY:
            going &= filled < S
    tl.atomic_add(count_ptr, tl.sum(filled.to(tl.int64), axis=0))
    if not COUNT_ONLY:
        tl.store(k_next_ptr + ray, k, mask=live)


@triton.jit
def _composite_kernel(
    active_ptr, n_active, step_ptr, k_next_ptr, k_end_ptr, done_ptr, trans_ptr, rgb_ptr, depth_ptr, acc_ptr,
    slot_net_ptr, slot_t_ptr, sigma_ptr, color_ptr, num_nets, threshold,
    S: tl.constexpr, BLOCK: tl.constexpr, LEAKY: tl.constexpr, MAX_TAU: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = r < n_active
    ray = tl.load(active_ptr + r, mask=live, other=0)
    done = tl.load(done_ptr + ray, mask=live, other=1)
    go = live & (done == 0)
    trans = tl.load(trans_ptr + ray, mask=go, other=1.0)
    step = tl.load(step_ptr + ray, mask=go, other=0.0)
    cr = tl.zeros([BLOCK], dtype=tl.float32)
    cg = tl.zeros([BLOCK], dtype=tl.float32)
    cb = tl.zeros([BLOCK], dtype=tl.float32)
    dep = tl.zeros([BLOCK], dtype=tl.float32)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    optical = tl.zeros([BLOCK], dtype=tl.float32)
    stopped = ~go
    for s in tl.static_range(S):
        slot = r * S + s
        valid = go & (tl.load(slot_net_ptr + slot, mask=go, other=0) < num_nets)
        raw = tl.load(sigma_ptr + slot, mask=valid, other=0.0)
        if LEAKY:
            sigma = tl.where(raw > 0, raw, 0.01 * raw)
        else:
            sigma = tl.maximum(raw, 0.0)
        tau = tl.minimum(sigma * step, MAX_TAU)
        t_i = trans * tl.exp(-optical)
        alive = valid & ~stopped & (t_i > threshold)
        stopped |= valid & (t_i <= threshold)
        # 1 - exp(-tau) loses digits for small tau: a cubic there (error < tau^4 / 24).
        alpha = tl.where(tau < 1e-3, tau * (1.0 - tau * (0.5 - tau / 6.0)), 1.0 - tl.exp(-tau))
        w = tl.where(alive, alpha * t_i, 0.0)
        cr += w * tl.load(color_ptr + slot * 3 + 0, mask=alive, other=0.0)
        cg += w * tl.load(color_ptr + slot * 3 + 1, mask=alive, other=0.0)
        cb += w * tl.load(color_ptr + slot * 3 + 2, mask=alive, other=0.0)
        dep += w * tl.load(slot_t_ptr + slot, mask=alive, other=0.0)
        acc += w
        optical += tl.where(valid, tau, 0.0)
    trans_out = trans * tl.exp(-optical)
    k_next = tl.load(k_next_ptr + ray, mask=go, other=0)
    k_end = tl.load(k_end_ptr + ray, mask=go, other=0)
    finished = stopped | (trans_out <= threshold) | (k_next >= k_end)
    tl.store(rgb_ptr + ray * 3 + 0, tl.load(rgb_ptr + ray * 3 + 0, mask=go, other=0.0) + cr, mask=go)
    tl.store(rgb_ptr + ray * 3 + 1, tl.load(rgb_ptr + ray * 3 + 1, mask=go, other=0.0) + cg, mask=go)
    tl.store(rgb_ptr + ray * 3 + 2, tl.load(rgb_ptr + ray * 3 + 2, mask=go, other=0.0) + cb, mask=go)
    tl.store(depth_ptr + ray, tl.load(depth_ptr + ray, mask=go, other=0.0) + dep, mask=go)
    tl.store(acc_ptr + ray, tl.load(acc_ptr + ray, mask=go, other=0.0) + acc, mask=go)
    tl.store(trans_ptr + ray, trans_out, mask=go)
    tl.store(done_ptr + ray, finished.to(tl.int8), mask=go)


class TritonFusedRenderer(FusedRenderer):
    """The three kernels over one set of parameters (see the module docstring)."""

    def __init__(self, num_nets: int, evaluate: SlotEvaluator) -> None:
        self.num_nets, self.evaluate = num_nets, evaluate

    def render(
        self, grid: FusedGrid, occupancy: FusedOccupancy | None, rays: FusedRays, ert_threshold: float,
        samples_per_pass: int, count_candidates: bool, density_activation: str = "relu", tile_rays: int | None = None,
    ) -> FusedResult:  # fmt: skip
        """As :meth:`FusedRenderer.render`; ``tile_rays`` is not used (all rays march together)."""
        o, d = rays.origins.contiguous(), rays.dirs.contiguous()
        device, n, s = o.device, int(o.shape[0]), int(samples_per_pass)
        near, step = rays.near.contiguous(), rays.step.contiguous()
        k_next = rays.k_lo.to(torch.int64).contiguous().clone()
        k_end = (k_next + rays.k_count.to(torch.int64)).contiguous()
        done = (rays.k_count <= 0).to(torch.int8)
        trans = o.new_ones(n)
        rgb, depth, acc = o.new_zeros(n, 3), o.new_zeros(n), o.new_zeros(n)
        counts = torch.zeros(2, dtype=torch.int64, device=device)  # evaluated, candidates never reached
        nets = self.num_nets
        gbox = grid.bbox.to(torch.float32).cpu().tolist()
        occ = _occupancy_args(occupancy, device)
        check_grid = occupancy is None or not torch.equal(occupancy.bbox.float().cpu(), grid.bbox.float().cpu())
        geometry = [*occ[1:], *gbox[0], *gbox[1], *grid.res, nets]

        def march(active: Tensor, slots: tuple[Tensor, Tensor, Tensor], count: Tensor, count_only: bool) -> None:
            _march_kernel[(triton.cdiv(int(active.shape[0]), RAYS_PER_PROGRAM),)](
                active, int(active.shape[0]), o, d, near, step, k_next, k_end, done, occ[0], *geometry, *slots, count,
                S=s, BLOCK=RAYS_PER_PROGRAM, USE_OCC=occupancy is not None, CHECK_GRID=check_grid,
                COUNT_ONLY=count_only, enable_fp_fusion=False,
            )  # fmt: skip

        active = (done == 0).nonzero()[:, 0]
        passes = 0
        while active.numel() > 0:
            m = int(active.shape[0])
            slot_net = torch.empty(m * s, dtype=torch.int32, device=device)
            slot_local, slot_t = o.new_empty(m * s, 3), o.new_empty(m * s)
            sigma, color = o.new_empty(m * s), o.new_empty(m * s, 3)
            ray_of_slot = active.repeat_interleave(s)
            for _ in range(PASSES_PER_SYNC):
                march(active, (slot_net, slot_local, slot_t), counts[0:1], False)
                self.evaluate(slot_net, slot_local, d, ray_of_slot, sigma, color)
                _composite_kernel[(triton.cdiv(m, RAYS_PER_PROGRAM),)](
                    active, m, step, k_next, k_end, done, trans, rgb, depth, acc, slot_net, slot_t, sigma, color,
                    nets, float(ert_threshold), S=s, BLOCK=RAYS_PER_PROGRAM,
                    LEAKY=density_activation == "leaky_relu", MAX_TAU=MAX_OPTICAL_THICKNESS,
                )  # fmt: skip
                passes += 1
            active = active[done.index_select(0, active) == 0]
        candidates = -1
        if count_candidates:
            # The candidates behind each ray's end (early termination) too: march on, counting only.
            done.zero_()
            march(torch.arange(n, device=device), (k_next, k_next, k_next), counts[1:2], True)  # no slots written
        evaluated, remaining = counts.tolist()
        if count_candidates:
            candidates = evaluated + remaining
        return FusedResult(rgb=rgb, depth=depth, acc=acc, evaluated=int(evaluated), candidates=int(candidates),
                           passes=passes, blocks=0, seconds={})  # fmt: skip


def _occupancy_args(occupancy: FusedOccupancy | None, device: torch.device) -> list:
    """Bits pointer and the box and resolution scalars of the occupancy grid (dummies without one)."""
    if occupancy is None:
        return [torch.zeros(1, dtype=torch.uint8, device=device), *([0.0] * 6), 1, 1, 1]
    box = occupancy.bbox.to(torch.float32).cpu().tolist()
    return [occupancy.bits.to(device).contiguous(), *box[0], *box[1], *occupancy.res]
