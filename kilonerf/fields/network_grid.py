"""The regular grid of cells that KiloNeRF assigns one tiny MLP each.

Choice of cell shape: like the original, the scene box is kept exactly and the cell size is
``extent_i / res_i`` per axis, so cells are only approximately cubic (Lego with the NSVF box:
9 x 16 x 10 cells of about 0.141 x 0.143 x 0.135). Extending the box to make cells cubic would
waste networks on space outside the box that no sample ever reaches.

Networks are numbered row-major over (x, y, z) cells: ``index = (ix * ry + iy) * rz + iz``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kilonerf.errors import KiloNerfError
from kilonerf.fields.box_cells import box_cells, box_inside


def grid_resolution(bbox: Tensor, max_res: int = 16,
                    aspect: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[int, int, int]:  # fmt: skip
    """Cells per axis: ``max_res`` on the longest axis, ``ceil(max_res * extent_i / max_extent)``
    on the others (so cells are about cubic, or of the shape ``aspect``: relative cell length
    per axis, extents divided by it). ``bbox`` is (2, 3) min and max corners."""
    extent = (bbox[1] - bbox[0]).to(torch.float64) / torch.tensor(aspect, dtype=torch.float64)
    if bool((extent <= 0).any()) or max_res < 1:
        raise KiloNerfError(f"network grid: empty box {bbox.tolist()} or max_res {max_res} < 1")
    longest = float(extent.max())
    # The tiny tolerance keeps e.g. 16 * 1.0 / 1.0 from becoming 17 through rounding.
    res = [max(1, math.ceil(max_res * float(e) / longest - 1e-9)) for e in extent]
    return res[0], res[1], res[2]


@dataclass(frozen=True)
class NetworkGrid:
    """Axis-aligned box split into ``res`` cells. ``bbox`` is (2, 3) float (min, max)."""

    bbox: Tensor
    res: tuple[int, int, int]

    @staticmethod
    def from_bbox(bbox: Tensor, max_res: int = 16) -> "NetworkGrid":
        bbox = torch.as_tensor(bbox, dtype=torch.float32).reshape(2, 3)
        return NetworkGrid(bbox=bbox, res=grid_resolution(bbox, max_res))

    @property
    def num_networks(self) -> int:
        return self.res[0] * self.res[1] * self.res[2]

    @property
    def cell_size(self) -> Tensor:
        """(3,) cell extent per axis."""
        return (self.bbox[1] - self.bbox[0]) / torch.tensor(self.res, dtype=self.bbox.dtype, device=self.bbox.device)

    def inside(self, points: Tensor | list[Tensor]) -> Tensor:
        """(N, 3) (or its three columns) -> bool (N,): inside the closed box."""
        return box_inside(points, self.bbox)

    def locate(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Network index and cell-local coordinates of world points.

        Args:
            points: (N, 3) world positions.
        Returns:
            net_index (N,) int64, -1 for points outside the closed box; local (N, 3) in
            [-1, 1] (cell min maps to -1, cell max to +1; meaningless where net_index is -1).
            Points on the box's max faces belong to the last cell along that axis (local +1).
        """
        cells = box_cells(points, self.bbox, self.res)
        local = torch.stack([(u - c.to(u.dtype)) * 2.0 - 1.0 for u, c in zip(cells.u, cells.cell)], dim=-1)
        return cells.flat(self.res), local.clamp_(-1.0, 1.0)

    def cell_bounds(self, net_index: Tensor) -> tuple[Tensor, Tensor]:
        """(K,) network indices -> their cells' min and max corners, each (K, 3)."""
        rz, ry = self.res[2], self.res[1]
        cell = torch.stack([net_index // (ry * rz), (net_index // rz) % ry, net_index % rz], dim=-1)
        size = self.cell_size.to(net_index.device)
        lo = self.bbox[0].to(net_index.device) + cell.to(size.dtype) * size
        return lo, lo + size

    def to_world(self, net_index: Tensor, local: Tensor) -> Tensor:
        """Inverse of :meth:`locate`: (K,) indices and (K, 3) local coords -> (K, 3) world."""
        lo, hi = self.cell_bounds(net_index)
        return lo + (local + 1.0) * 0.5 * (hi - lo)
