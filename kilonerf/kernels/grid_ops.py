"""Dense voxel grids (channels-last, ``(V, C)`` node rows): trilinear lookups whose gradient
goes straight into the grid's ``.grad`` (for the Adam step over the rows that got one,
:func:`kilonerf.kernels.adam.row_adam_`).

Why not plain autograd and ``torch.optim.Adam``: a fast-teacher step touches a few hundred
thousand of the grids' millions of nodes, yet autograd hands back a dense gradient per lookup
(zeroed, then scattered one channel at a time) and Adam then reads and writes every node. On
2 CPU cores that was about half of a step (lego_100: 40 of 84 ms; docs/benchmarks.md). Here
the backward accumulates into one persistent gradient buffer, and ``row_adam_`` updates
only the rows with a non-zero gradient and zeroes them again (as instant-ngp skips its
untouched hash entries), so nothing per step is proportional to the whole grid except one
read of the gradient.

Each operation has two implementations with the same semantics: compiled (``kn_grid.c``, CPU
float32) and torch (any device; the reference the tests compare against).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kilonerf.kernels.native import compiled_for, ptr
from kilonerf.kernels.row_gather import accumulates_in_place, grad_buffer


class _GridLerp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, grid: Tensor, channels: int, idx: Tensor, w: Tensor, native: bool | None,
                in_place: bool) -> Tensor:  # fmt: skip
        rows = grid.view(-1, channels)
        lib = compiled_for(grid, w, native=native)
        if lib is not None:
            out = w.new_empty(idx.shape[0], channels)
            lib.kn_grid_lerp(ptr(rows), channels, ptr(idx), ptr(w), idx.shape[0], ptr(out), torch.get_num_threads())
        else:
            vals = rows.index_select(0, idx.reshape(-1).long()).view(idx.shape[0], 8, channels)
            out = torch.einsum("nkc,nk->nc", vals, w)
        ctx.grid, ctx.channels, ctx.native = grid, channels, native
        ctx.in_place = in_place
        ctx.save_for_backward(idx, w)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        idx, w = ctx.saved_tensors
        grid, c = ctx.grid, ctx.channels
        result = grad_buffer(grid) if ctx.in_place else torch.zeros_like(grid)
        grad = result.view(-1, c)
        grad_out = grad_out.contiguous()
        lib = compiled_for(grad, grad_out, w, native=ctx.native)
        if lib is not None:
            lib.kn_grid_lerp_backward(ptr(grad_out), c, ptr(idx), ptr(w), idx.shape[0], ptr(grad), grad.shape[0],
                                      torch.get_num_threads())  # fmt: skip
        else:
            contrib = (w[:, :, None] * grad_out[:, None, :]).reshape(-1, c)
            grad.index_add_(0, idx.reshape(-1).long(), contrib)
        return None if ctx.in_place else result, None, None, None, None, None


def grid_lerp(grid: Tensor, channels: int, idx: Tensor, w: Tensor, native: bool | None = None) -> Tensor:
    """Trilinear interpolation of a channels-last grid from precomputed corners.

    Args:
        grid: contiguous, its memory ``(V, channels)`` node rows (e.g. ``(Rz, Ry, Rx, C)``, or
            ``(1, Rz, Ry, Rx)`` for one channel). Where it has a gradient buffer
            (:func:`~kilonerf.kernels.row_gather.accumulates_in_place`) the backward adds into
            it in place instead of returning a gradient.
        idx: (N, 8) int32 flat node indices, w: (N, 8) weights (``corner_weights``).
        native: None: the compiled kernel where it applies; False: torch; True: compiled.
    Returns:
        (N, channels).
    """
    if not grid.is_contiguous() or grid.numel() % channels:
        raise ValueError(f"grid of shape {tuple(grid.shape)} is not contiguous rows of {channels} channels")
    # Decided here, not in forward: autograd runs a function's forward with grad mode off, where
    # accumulates_in_place is always False (every step then zeroed and added a whole-grid gradient).
    return _GridLerp.apply(grid, channels, idx.contiguous(), w.contiguous(), native, accumulates_in_place(grid))
