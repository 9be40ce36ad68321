"""What the shared training loop needs from a stage's model."""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor


class Trainable(Protocol):
    """A model plus its optimiser, trained by :mod:`kilonerf.train.loop` on ray batches."""

    rays_per_step: int
    """How many random training rays the loop passes to each :meth:`train_step`."""

    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Tensor | float]:
        """One optimisation step on rays (B, 3), unit dirs (B, 3), target rgb (B, 3) in [0, 1].

        Returns at least ``{"loss": ..., "psnr": ...}`` (PSNR of this batch's rgb MSE), as floats
        or 0-dim tensors; tensors let the loop avoid a device sync every step.
        """
        ...

    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Evaluation render (no grad, chunked internally): rays (N, 3) -> rgb (N, 3)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically: model, optimiser, schedules."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
