"""The optional fused capability of a backend: march, evaluate and composite in one call.

A renderer asks its backend for one (:meth:`GroupedBackend.fused_renderer`); a backend that
has none returns None and the renderer evaluates through :meth:`GroupedBackend.evaluate`
instead. The inputs are plain tensors (the network grid, the occupancy bits, the rays with
their candidate sample ranges), so a backend knows nothing of the fields or grids above it.
The result equals :func:`kilonerf.render.fast.render_fast`'s torch path (tests compare them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor

PHASES = ("march", "sort", "mlp", "composite")
"""A fused renderer's phases, as timed in :attr:`FusedResult.seconds`."""


@dataclass(frozen=True)
class FusedGrid:
    """The network grid: ``res`` cells of one box, network ``(x * Y + y) * Z + z`` in cell (x, y, z)."""

    bbox: Tensor
    """(2, 3) float32 min and max corner."""
    res: tuple[int, int, int]


@dataclass(frozen=True)
class FusedOccupancy:
    """Occupied voxels and the coarse skip grid over them (see ``OccupancyGrid``)."""

    bits: Tensor
    """Packed uint8 bits, one per voxel, row-major over (x, y, z)."""
    bbox: Tensor
    """(2, 3) float32."""
    res: tuple[int, int, int]
    coarse: Tensor
    """(Cx, Cy, Cz) uint8: 1 where a coarse cell may hold occupied voxels."""
    coarse_cell: Tensor
    """(3,) float32 size of a coarse cell."""


@dataclass(frozen=True)
class FusedRays:
    """Rays and the samples each may take: sample ``k`` of ray ``r`` lies at ``near + k * step``,
    for ``k_lo <= k < k_lo + k_count``."""

    origins: Tensor
    """(N, 3) float32."""
    dirs: Tensor
    """(N, 3) float32 unit."""
    near: Tensor
    """(N,) float32."""
    step: Tensor
    """(N,) float32."""
    k_lo: Tensor
    """(N,) int64."""
    k_count: Tensor
    """(N,) int64."""


@dataclass
class FusedResult:
    rgb: Tensor
    """(N, 3) without background."""
    depth: Tensor
    acc: Tensor
    evaluated: int
    candidates: int
    """-1 unless counted."""
    passes: int
    blocks: int
    """MLP blocks evaluated (backend-specific; 0 where it has none)."""
    seconds: dict[str, float]
    """Thread-seconds per phase (:data:`PHASES`), summed over the threads."""


class FusedRenderer(ABC):
    """A backend's march-evaluate-composite loop for one set of network parameters."""

    @abstractmethod
    def render(
        self, grid: FusedGrid, occupancy: FusedOccupancy | None, rays: FusedRays, ert_threshold: float,
        samples_per_pass: int, count_candidates: bool, density_activation: str = "relu", tile_rays: int | None = None,
    ) -> FusedResult:  # fmt: skip
        """Render ``rays`` front to back with early termination at ``ert_threshold``,
        ``samples_per_pass`` candidates a ray first (the torch path's passes); ``tile_rays``:
        rays per work item (backend default when None)."""
