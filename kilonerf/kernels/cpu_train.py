"""Training through the compiled CPU kernels: the tiny MLPs' forward (``kn_eval``, fp32) and the
gradients of their parameters (``kn_mlp_backward`` in ``csrc/kn_mlp_grad.c``) as one autograd
function.

Why: torch's batched products on these 63 / 32 / 33 / 59 / 3-wide layers ran a distillation
step's forward and backward at ~44 GFLOP/s on two Xeon cores, ~60% of the step
(docs/benchmarks.md). Inputs (positions, directions) get no gradient; training never needs one.

Where a parameter has a gradient buffer (:func:`~kilonerf.kernels.row_gather.accumulates_in_place`)
the gradient is added into it in place and the function returns none for it, so no zeroed
gradient is made per call (fine-tuning: the student's tensors under ``LazyRowAdam``;
distillation: its chunks' copies of their networks, whose buffers are rows of one per step);
elsewhere it returns fresh gradients.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import Tensor

from kilonerf.kernels.base import NUM_LAYERS, MultiNetParams
from kilonerf.kernels.native import pointer_array, ptr
from kilonerf.kernels.row_gather import accumulates_in_place, grad_buffer


def check_rc(rc: int, what: str, num_nets: int, n: int) -> None:
    """Turn a kernel's return code into the error it stands for (0: none)."""
    if rc == -1:
        raise ValueError(f"{what}: network index outside [0, {num_nets})")
    if rc != 0:
        raise MemoryError(f"{what}: out of memory for {n} samples")


class _CompiledMlp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, lib: ctypes.CDLL, threads: int, in_place: tuple[bool, ...], net: Tensor, pos: Tensor,
                dirs: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
        w, b = params[:NUM_LAYERS], params[NUM_LAYERS:]
        w = tuple(t.detach().contiguous() for t in w)
        b = tuple(t.detach().contiguous() for t in b)
        k, n = int(w[0].shape[0]), int(net.shape[0])
        sigma, rgb = pos.new_empty(n), pos.new_empty(n, 3)
        rc = lib.kn_eval(pointer_array(w), pointer_array(b), None, 0, k, ptr(net), ptr(pos), ptr(dirs), n, ptr(sigma),
                         ptr(rgb), threads)  # fmt: skip
        check_rc(rc, "cpu backend", k, n)
        ctx.lib, ctx.threads, ctx.sources, ctx.in_place = lib, threads, params, in_place
        ctx.save_for_backward(net, pos, dirs, *w, *b)
        return sigma, rgb

    @staticmethod
    def backward(ctx: Any, g_sigma: Tensor | None, g_rgb: Tensor | None) -> tuple[Tensor | None, ...]:
        net, pos, dirs, *wb = ctx.saved_tensors
        n, k = int(net.shape[0]), int(wb[0].shape[0])
        g_sigma = pos.new_zeros(n) if g_sigma is None else g_sigma.float().contiguous()
        g_rgb = pos.new_zeros(n, 3) if g_rgb is None else g_rgb.float().contiguous()
        grads: list[Tensor | None] = []
        outs = []
        for i, (src, in_place) in enumerate(zip(ctx.sources, ctx.in_place)):
            if in_place:
                grads.append(None)
                outs.append(grad_buffer(src))
            else:
                g = torch.zeros_like(src, memory_format=torch.contiguous_format)
                grads.append(g if ctx.needs_input_grad[6 + i] else None)
                outs.append(g)
        rc = ctx.lib.kn_mlp_backward(pointer_array(wb[:NUM_LAYERS]), pointer_array(wb[NUM_LAYERS:]), k, ptr(net), ptr(pos),
                                     ptr(dirs), ptr(g_sigma), ptr(g_rgb), n, pointer_array(outs[:NUM_LAYERS]),
                                     pointer_array(outs[NUM_LAYERS:]), ctx.threads)  # fmt: skip
        check_rc(rc, "cpu backend (backward)", k, n)
        return (None, None, None, None, None, None, *grads)


def compiled_mlp(lib: ctypes.CDLL, threads: int, params: MultiNetParams, net_index: Tensor, local_pos: Tensor,
                 dirs: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Raw density (N,) and rgb (N, 3) of the tiny MLPs, differentiable in ``params`` (float32
    CPU tensors of the compiled architecture, checked by the caller); the arguments as in
    :meth:`~kilonerf.kernels.base.GroupedBackend.evaluate` without ``dir_index``."""
    net = net_index.to(torch.int64).contiguous()
    pos = local_pos.detach().to(torch.float32).contiguous()
    d = dirs.detach().to(torch.float32).contiguous()
    sources = (*params.weights, *params.biases)
    # Decided here: autograd runs the function's forward and backward with grad mode off.
    in_place = tuple(accumulates_in_place(t) for t in sources)
    return _CompiledMlp.apply(lib, threads, in_place, net, pos, d, *sources)
