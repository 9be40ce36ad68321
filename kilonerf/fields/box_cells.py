"""Which cell of a regular grid over a box each point falls in: shared by the network grid and
the occupancy grid, so that both (and the compiled renderer, which repeats the arithmetic)
agree on every point, faces included."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class BoxCells:
    """Per-axis results of :func:`box_cells`: lists of three tensors (x, y, z) shaped like the
    point columns."""

    u: list[Tensor]
    """Continuous cell coordinates: 0 at the box's min face, ``res`` at its max face."""
    cell: list[Tensor]
    """int64 cell index, clamped to [0, res - 1] (points on a max face are in the last cell)."""
    inside: Tensor
    """bool: the point is inside the closed box."""

    def flat(self, res: tuple[int, int, int]) -> Tensor:
        """Row-major flat cell index ``(ix * ry + iy) * rz + iz``, -1 outside the box."""
        flat = (self.cell[0] * res[1] + self.cell[1]) * res[2] + self.cell[2]
        return torch.where(self.inside, flat, torch.full_like(flat, -1))


def box_cells(points: Tensor | list[Tensor], bbox: Tensor, res: tuple[int, int, int]) -> BoxCells:
    """Cells of ``res`` over ``bbox`` (2, 3) holding ``points``: (N, 3), or its three (N,)
    columns (any equal shapes; the results then have that shape).

    Computed one axis at a time on columns: elementwise ops between an (N, 3) tensor and a
    (3,) one run several times slower on the CPU, and the arithmetic per element is the same
    (so results are bit for bit those of the broadcast form).
    """
    cols = _columns(points)
    box = bbox.to(cols[0])
    extent = box[1] - box[0]
    u, cell = [], []
    for a, p in enumerate(cols):
        # Divide by the extent first: the max corner then gives exactly res (x / x == 1).
        ua = (p - box[0, a]) / extent[a] * float(res[a])
        u.append(ua)
        cell.append(torch.floor(ua).to(torch.int64).clamp_(0, res[a] - 1))
    return BoxCells(u, cell, box_inside(cols, box))


def box_inside(points: Tensor | list[Tensor], bbox: Tensor) -> Tensor:
    """bool: ``points`` ((N, 3) or its three columns) inside the closed box ``bbox`` (2, 3),
    tested column by column like :func:`box_cells`."""
    cols = _columns(points)
    box = bbox.to(cols[0])
    inside = (cols[0] >= box[0, 0]) & (cols[0] <= box[1, 0])
    for a in (1, 2):
        inside &= (cols[a] >= box[0, a]) & (cols[a] <= box[1, a])
    return inside


def _columns(points: Tensor | list[Tensor]) -> list[Tensor]:
    return [points[:, a] for a in range(3)] if isinstance(points, Tensor) else list(points)
