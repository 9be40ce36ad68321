"""Small analytic radiance fields and grids for the distillation and fine-tuning tests."""

from __future__ import annotations

import torch
from torch import Tensor

from kilonerf.occupancy.grid import OccupancyGrid


class SphereField:
    """A soft sphere of density ``sigma`` and radius ``radius`` at the origin.

    Colour: ``flat`` everywhere, or (None) a smooth function of position and direction.
    Counts the points it is asked about in ``calls``.
    """

    def __init__(self, radius: float = 0.6, sigma: float = 50.0, flat: tuple[float, float, float] | None = None):
        self.radius, self.sigma, self.flat = radius, sigma, flat
        self.calls = 0

    def density(self, points: Tensor) -> Tensor:
        self.calls += points.shape[0]
        return self.sigma * torch.sigmoid((self.radius - points.norm(dim=-1)) * 40.0)

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.density(points)
        if self.flat is not None:
            return sigma, torch.tensor(self.flat, dtype=points.dtype).expand(points.shape[0], 3)
        rgb = torch.sigmoid(torch.stack([3 * points[:, 0], 3 * points[:, 1] + dirs[:, 0], 3 * points[:, 2] - dirs[:, 2]], -1))
        return sigma, rgb


def ball_occupancy(bbox: Tensor, res: int, radius: float) -> OccupancyGrid:
    """Voxels of a res^3 grid over ``bbox`` whose centre lies within ``radius`` of the origin."""
    axes = [bbox[0, a] + (torch.arange(res) + 0.5) / res * (bbox[1, a] - bbox[0, a]) for a in range(3)]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    return OccupancyGrid.from_dense((x * x + y * y + z * z).sqrt() < radius, bbox)


def corner_occupancy(bbox: Tensor, res: int) -> OccupancyGrid:
    """Only the voxels in the first quarter of the box along every axis are occupied."""
    occ = torch.zeros(res, res, res, dtype=torch.bool)
    occ[: res // 4, : res // 4, : res // 4] = True
    return OccupancyGrid.from_dense(occ, bbox)
