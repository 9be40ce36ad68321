"""Dense voxel grids (channels-last, ``(V, C)`` node rows): trilinear lookups whose gradient
goes straight into the grid's ``.grad``, and an Adam step over the rows that got one.

Why not plain autograd and ``torch.optim.Adam``: a fast-teacher step touches a few hundred
thousand of the grids' millions of nodes, yet autograd hands back a dense gradient per lookup
(zeroed, then scattered one channel at a time) and Adam then reads and writes every node. On
2 CPU cores that was about half of a step (lego_100: 40 of 84 ms; docs/benchmarks.md). Here
the backward accumulates into one persistent gradient buffer, and :func:`row_adam_` updates
only the rows with a non-zero gradient and zeroes them again (as instant-ngp skips its
untouched hash entries), so nothing per step is proportional to the whole grid except one
read of the gradient.

Each operation has two implementations with the same semantics: compiled (``kn_grid.c``, CPU
float32) and torch (any device; the reference the tests compare against).
"""

from __future__ import annotations

import ctypes
import warnings
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    from kilonerf.kernels.native import NativeUnavailable, NoCompiler, load_library

    try:
        return load_library()
    except NoCompiler:
        return None
    except NativeUnavailable as exc:
        warnings.warn(f"compiled grid kernels unavailable, using torch instead: {exc}", stacklevel=3)
        return None


def _native(*tensors: Tensor, native: bool | None) -> ctypes.CDLL | None:
    """The compiled library when it applies to ``tensors`` (CPU float32) and ``native`` allows
    it (None: wherever it applies; False: never; True: required)."""
    fits = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    lib = _library() if fits and native is not False else None
    if native and lib is None:
        raise RuntimeError("the compiled grid kernels do not apply here (CPU float32 tensors and a C compiler)")
    return lib


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


class _GridLerp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, grid: Tensor, channels: int, idx: Tensor, w: Tensor, native: bool | None) -> Tensor:
        rows = grid.view(-1, channels)
        lib = _native(grid, w, native=native)
        if lib is not None:
            out = w.new_empty(idx.shape[0], channels)
            lib.kn_grid_lerp(_ptr(rows), channels, _ptr(idx), _ptr(w), idx.shape[0], _ptr(out),
                             torch.get_num_threads())  # fmt: skip
        else:
            vals = rows.index_select(0, idx.reshape(-1).long()).view(idx.shape[0], 8, channels)
            out = torch.einsum("nkc,nk->nc", vals, w)
        ctx.grid, ctx.channels, ctx.native = grid, channels, native
        ctx.save_for_backward(idx, w)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, ...]:
        idx, w = ctx.saved_tensors
        grid, c = ctx.grid, ctx.channels
        if grid.grad is None:
            grid.grad = torch.zeros_like(grid)
        grad = grid.grad.view(-1, c)
        grad_out = grad_out.contiguous()
        lib = _native(grad, grad_out, w, native=ctx.native)
        if lib is not None:
            lib.kn_grid_lerp_backward(_ptr(grad_out), c, _ptr(idx), _ptr(w), idx.shape[0], _ptr(grad), grad.shape[0],
                                      torch.get_num_threads())  # fmt: skip
        else:
            contrib = (w[:, :, None] * grad_out[:, None, :]).reshape(-1, c)
            grad.index_add_(0, idx.reshape(-1).long(), contrib)
        return None, None, None, None, None


def grid_lerp(grid: Tensor, channels: int, idx: Tensor, w: Tensor, native: bool | None = None) -> Tensor:
    """Trilinear interpolation of a channels-last grid from precomputed corners.

    Args:
        grid: contiguous, its memory ``(V, channels)`` node rows (e.g. ``(Rz, Ry, Rx, C)``, or
            ``(1, Rz, Ry, Rx)`` for one channel). When it requires grad it must be a leaf:
            the backward adds into ``grid.grad`` in place (made once, as zeros) instead of
            returning a gradient, so clear it with :func:`row_adam_`, not ``zero_grad``.
        idx: (N, 8) int32 flat node indices, w: (N, 8) weights (``corner_weights``).
        native: None: the compiled kernel where it applies; False: torch; True: compiled.
    Returns:
        (N, channels).
    """
    if grid.requires_grad and grid.grad_fn is not None:
        raise ValueError("grid_lerp accumulates into grid.grad: the grid must be a leaf tensor")
    if not grid.is_contiguous() or grid.numel() % channels:
        raise ValueError(f"grid of shape {tuple(grid.shape)} is not contiguous rows of {channels} channels")
    return _GridLerp.apply(grid, channels, idx.contiguous(), w.contiguous(), native)


@torch.no_grad()
def row_adam_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, channels: int, lr: float,
              betas: tuple[float, float], eps: float, step: int, native: bool | None = None) -> int:
    """One Adam step (``torch.optim.Adam``'s, no weight decay) on the ``(V, channels)`` rows of
    ``param`` whose gradient row is non-zero; those gradient rows are zeroed. The others keep
    their value and moments. ``step`` counts from 1 (bias correction). Returns the rows updated.
    All four tensors contiguous and alike in shape."""
    lib = _native(param, grad, exp_avg, exp_avg_sq, native=native)
    if lib is not None:
        return int(lib.kn_grid_adam(_ptr(param), _ptr(grad), _ptr(exp_avg), _ptr(exp_avg_sq), param.numel() // channels,
                                    channels, lr, betas[0], betas[1], eps, float(step), torch.get_num_threads()))
    g = grad.view(-1, channels)
    rows = torch.nonzero(g.ne(0).any(1)).squeeze(1)
    gr = g.index_select(0, rows)
    m = exp_avg.view(-1, channels).index_select(0, rows).lerp_(gr, 1 - betas[0])
    v = exp_avg_sq.view(-1, channels).index_select(0, rows).mul_(betas[1]).addcmul_(gr, gr, value=1 - betas[1])
    step_size = lr / (1 - betas[0] ** step)
    denom = (v.sqrt() / (1 - betas[1] ** step) ** 0.5).add_(eps)
    p = param.view(-1, channels).index_select(0, rows).addcdiv_(m, denom, value=-step_size)
    for dst, src in ((exp_avg, m), (exp_avg_sq, v), (param, p)):
        dst.view(-1, channels).index_copy_(0, rows, src)
    g.index_fill_(0, rows, 0.0)
    return int(rows.numel())
