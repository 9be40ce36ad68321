"""Row gathers whose gradient is added in place into the source parameter's ``.grad``.

Why: autograd's ``index_select`` backward allocates a zeroed gradient of the whole source for
every call and then adds it to ``.grad``; with the tiny networks' layers batched into a few
tensors (tens of MB), zeroing alone took ~6 of a lego_100 fine-tuning step's 57 ms, for the
third of the networks a step samples. Here a gradient buffer made once (by :class:`kilonerf.train.lazy_adam.LazyRowAdam`,
which zeroes the rows it updates) is added into in place (``grid_ops.grid_lerp`` does the same
for voxel grids).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def accumulates_in_place(source: Tensor) -> bool:
    """Whether a backward adds into ``source.grad`` in place: a leaf that requires grad and
    already has a gradient buffer (:class:`~kilonerf.train.lazy_adam.LazyRowAdam` makes them),
    with autograd recording."""
    return torch.is_grad_enabled() and source.requires_grad and source.grad_fn is None and source.grad is not None


def grad_buffer(source: Tensor) -> Tensor:
    """``source.grad``, contiguous (autograd may have stored a gradient as it came)."""
    if not source.grad.is_contiguous():
        source.grad = source.grad.contiguous()
    return source.grad


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, source: Tensor, rows: tuple[int, ...], index: Tensor) -> Tensor:
        ctx.source, ctx.rows = source, rows
        ctx.save_for_backward(index)
        return source.view(rows).index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, None, None]:
        (index,) = ctx.saved_tensors
        grad_buffer(ctx.source).view(ctx.rows).index_add_(0, index, grad_out)
        return None, None, None


def gather_rows(source: Tensor, index: Tensor, rows: tuple[int, ...] | None = None) -> Tensor:
    """``source.view(rows).index_select(0, index)``; where :func:`accumulates_in_place`, the
    backward adds into ``source.grad`` instead of returning a gradient (so ``torch.autograd.grad``
    does not see it; ``backward()`` gives the same ``.grad`` either way).

    Args:
        source: contiguous.
        index: (N,) int64.
        rows: the shape to view ``source`` as (default its own).
    Returns:
        (N, *rows[1:]).
    """
    rows = tuple(source.shape) if rows is None else tuple(rows)
    if accumulates_in_place(source):
        return _GatherRows.apply(source, rows, index)
    return source.reshape(rows).index_select(0, index)
