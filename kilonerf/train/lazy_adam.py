"""Adam for row-structured parameters trained through in-place-accumulating gathers (the
teacher's voxel grids, :func:`kilonerf.kernels.grid_ops.grid_lerp`; the tiny networks' layers,
:func:`kilonerf.kernels.row_gather.gather_rows`).

Such a parameter's gradient is one persistent buffer that the gathers add into; each step
updates only the rows (grid nodes, networks) whose gradient is non-zero and zeroes them again
(:func:`~kilonerf.kernels.adam.row_adam_`), so a step costs what it touched. Rows without a
gradient keep their value and moments, where dense Adam would still move them by their stale
momentum (instant-ngp skips its untouched hash entries the same way). Other parameters get
plain Adam. The state dict has ``torch.optim.Adam``'s per-parameter keys (``step``,
``exp_avg``, ``exp_avg_sq``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from kilonerf.kernels.adam import row_adam_


class LazyRowAdam(torch.optim.Optimizer):
    """Adam over ``param_groups``; ``rows`` maps each row-structured parameter to the values per
    row (its memory is ``(V, values)``), every other parameter is dense."""

    def __init__(self, params: Iterable[dict[str, Any]], rows: dict[Tensor, int], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:  # fmt: skip
        super().__init__(params, {"lr": 1e-3, "betas": betas, "eps": eps})
        self.rows = rows
        self.decay: dict[Tensor, float] = {}
        """Per parameter, the coefficient ``c`` of a penalty whose gradient is ``c * param``,
        added inside the next steps (fine-tuning's L2 norms: ``l2_weight / ||param||``). Added
        here rather than by autograd, it costs no pass over the parameter of its own."""
        for p in rows:  # the buffers the gathers add into (kernels.row_gather.accumulates_in_place)
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the dense parameters' gradients; a row parameter's buffer stays (:meth:`step`
        zeroed the rows it used, the others are zero)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p not in self.rows:
                    p.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, betas, eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = int(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                decay = self.decay.get(p, 0.0)
                if p in self.rows:
                    row_adam_(p, p.grad, m, v, self.rows[p], lr, betas, eps, step, decay=decay)
                    continue
                if decay:
                    p.grad.add_(p, alpha=decay)
                m.lerp_(p.grad, 1 - betas[0])
                v.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
                denom = (v.sqrt() / (1 - betas[1] ** step) ** 0.5).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - betas[0] ** step))
