"""Adam steps on row-structured parameters, in place on some of their rows: a grid's nodes
(:func:`row_adam_`, the rows that got a gradient) or a grid of networks' layers
(:func:`indexed_adam_`, the networks trained this step).

Why: torch would gather each tensor's rows, update them and scatter them back (three copies of
parameter and moments per tensor and step: 43 of a distillation step's 175 ms on the demo), or
update every row. The compiled kernels (``kn_adam.c``, CPU float32) do it in one pass; the
torch twins (any device) have the same semantics and are what the tests compare against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kilonerf.kernels.native import compiled_for, ptr


@torch.no_grad()
def row_adam_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, channels: int, lr: float,
              betas: tuple[float, float], eps: float, step: int, native: bool | None = None, decay: float = 0.0) -> int:
    """One Adam step (``torch.optim.Adam``'s, no weight decay) on the ``(V, channels)`` rows of
    ``param`` whose gradient row is non-zero; those gradient rows are zeroed. The others keep
    their value and moments. ``step`` counts from 1 (bias correction). ``decay``: a penalty's
    gradient ``decay * param`` is added to every row's gradient first (every row is then
    updated). Returns the rows updated. All four tensors contiguous and alike in shape."""
    lib = compiled_for(param, grad, exp_avg, exp_avg_sq, native=native)
    if lib is not None:
        return int(lib.kn_row_adam(ptr(param), ptr(grad), ptr(exp_avg), ptr(exp_avg_sq), param.numel() // channels,
                                    channels, lr, betas[0], betas[1], eps, float(step), float(decay),
                                    torch.get_num_threads()))  # fmt: skip
    if decay:
        grad.add_(param, alpha=decay)
    g = grad.view(-1, channels)
    rows = torch.arange(g.shape[0], device=g.device) if decay else torch.nonzero(g.ne(0).any(1)).squeeze(1)
    bc1 = torch.full((rows.numel(),), 1 - betas[0] ** step, dtype=param.dtype, device=param.device)
    bc2 = torch.full_like(bc1, 1 - betas[1] ** step)
    indexed_adam_(param.view(-1, channels), g.index_select(0, rows), exp_avg.view(-1, channels),
                  exp_avg_sq.view(-1, channels), rows, bc1, bc2, lr, betas, eps, native=False)  # fmt: skip
    g.index_fill_(0, rows, 0.0)
    return int(rows.numel())


@torch.no_grad()
def indexed_adam_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, rows: Tensor, bc1: Tensor,
                  bc2: Tensor, lr: float, betas: tuple[float, float], eps: float, native: bool | None = None) -> None:
    """One Adam step on rows ``rows`` (R,) int64, distinct, of ``param`` (K, ...).

    Args:
        grad: (R, ...) the rows' gradients in the order of ``rows``.
        exp_avg, exp_avg_sq: (K, ...) moments, updated in place like ``param``.
        bc1, bc2: (R,) float32 bias corrections ``1 - beta ** step`` of each row's own step.
    Per value: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g², p -= (lr / bc1) m / (√v / √bc2 + eps).
    """
    lib = compiled_for(param, grad, exp_avg, exp_avg_sq, bc1, bc2, native=native)
    if lib is not None:
        grad, rows = grad.contiguous(), rows.contiguous()
        bc1, bc2 = bc1.contiguous(), bc2.contiguous()
        lib.kn_indexed_adam(ptr(param), ptr(grad), ptr(exp_avg), ptr(exp_avg_sq), ptr(rows), rows.numel(),
                            param[0].numel(), ptr(bc1), ptr(bc2), lr, betas[0], betas[1], eps, torch.get_num_threads())
        return
    b1, b2 = betas
    shape = (-1,) + (1,) * (param.dim() - 1)
    m = exp_avg.index_select(0, rows).mul_(b1).add_(grad, alpha=1.0 - b1)
    v = exp_avg_sq.index_select(0, rows).mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
    denom = v.sqrt().div_(bc2.sqrt().view(shape)).add_(eps)
    p = param.index_select(0, rows).addcdiv_(m * (lr / bc1).view(shape), denom, value=-1.0)
    for dst, src in ((exp_avg, m), (exp_avg_sq, v), (param, p)):
        dst.index_copy_(0, rows, src)
