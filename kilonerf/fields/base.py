"""The interface every radiance field (teachers and the tiny-MLP student) offers."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class RadianceField(Protocol):
    """Density and colour at world-space points.

    ``density`` is the non-negative volume density sigma per unit world length (after the
    field's activation), so opacity over a step ``delta`` is ``1 - exp(-sigma * delta)``.
    """

    def density(self, points: Tensor) -> Tensor:
        """points (N, 3) -> sigma (N,)."""
        ...

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """points (N, 3), unit dirs (N, 3) -> sigma (N,), rgb (N, 3) in [0, 1]."""
        ...
