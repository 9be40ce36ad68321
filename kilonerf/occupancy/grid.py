"""The occupancy grid for empty-space skipping (built from a field by ``build.py``).

Storage: one bit per voxel, row-major over (x, y, z) voxels like the network grid, packed with
``np.packbits`` (big-endian bit order: voxel ``i`` is bit ``7 - i % 8`` of byte ``i // 8``) into
a uint8 tensor; a 256^3 grid takes 2 MiB. Lookups read the packed bits directly. On disk it is
an ``.npz`` (no pickle) holding ``bbox`` (2, 3) float32, ``res`` (3,) int64 and ``bits``.

Threshold semantics: the paper marks a voxel occupied if the NeRF teacher's raw sigma exceeds
10 at any of its 3 x 3 x 3 samples, on Synthetic scenes whose reference step is 0.0211 world
units. Sigma is a density per unit length, so the same rule for any scene scale is an opacity
over a step: ``alpha_threshold = 1 - exp(-10 * 0.0211)`` (about 0.19) over ``ref_step``.
Choice of ``ref_step``: :func:`reference_step` scales 0.0211 by the scene's depth range relative
to Synthetic's (near 2, far 6), i.e. (far - near) / 189.6, which reproduces sigma > 10 exactly
on Synthetic scenes. (Using the render step (far - near) / 383 instead would double the sigma
threshold there, to about 20, and drop more thin structure.) Distillation's alpha targets use
the same 0.0211 and should use the same :func:`reference_step`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kilonerf.errors import RunError
from kilonerf.fields.box_cells import box_cells
from kilonerf.io import atomic_write_bytes

PAPER_SIGMA_THRESHOLD = 10.0
PAPER_REF_STEP = 0.0211
SYNTHETIC_DEPTH_RANGE = 4.0
"""far - near of the Synthetic scenes (2 to 6), for which PAPER_REF_STEP was chosen."""


def alpha_from_sigma(sigma: float, step: float) -> float:
    """Opacity of density ``sigma`` over a step: 1 - exp(-sigma * step)."""
    return 1.0 - math.exp(-sigma * step)


def sigma_from_alpha(alpha: float, step: float) -> float:
    """Density whose opacity over ``step`` is ``alpha`` (inverse of :func:`alpha_from_sigma`)."""
    if not 0.0 <= alpha < 1.0 or step <= 0.0:
        raise ValueError(f"need 0 <= alpha < 1 and step > 0, got alpha={alpha}, step={step}")
    return -math.log1p(-alpha) / step


def reference_step(near: float, far: float) -> float:
    """The scene's counterpart of the paper's 0.0211: scaled by (far - near) / 4."""
    return PAPER_REF_STEP * (far - near) / SYNTHETIC_DEPTH_RANGE


PAPER_ALPHA_THRESHOLD = alpha_from_sigma(PAPER_SIGMA_THRESHOLD, PAPER_REF_STEP)


class OccupancyGrid:
    """Bit-packed boolean voxel grid over an axis-aligned box (see the module docstring)."""

    def __init__(self, bbox: Tensor, res: tuple[int, int, int], bits: Tensor) -> None:
        self.bbox = torch.as_tensor(bbox, dtype=torch.float32).reshape(2, 3)
        self.res = (int(res[0]), int(res[1]), int(res[2]))
        n = self.res[0] * self.res[1] * self.res[2]
        if bits.dtype != torch.uint8 or bits.shape != ((n + 7) // 8,):
            raise ValueError(
                f"OccupancyGrid: bits must be uint8 ({(n + 7) // 8},), got {bits.dtype} {tuple(bits.shape)}"
            )
        self.bits = bits
        # Caches of derived data (grids are immutable): occupied_bounds, coarse_skip_grid and
        # the one-byte-per-voxel table lookup reads (unpacking bits per query costs more).
        self._bounds: tuple[Tensor | None] | None = None
        self._coarse: dict[int, Tensor] = {}
        self._table: Tensor | None = None

    @staticmethod
    def from_dense(occupied: Tensor, bbox: Tensor) -> "OccupancyGrid":
        """From a bool (X, Y, Z) tensor over ``bbox`` (2, 3)."""
        packed = np.packbits(occupied.detach().cpu().numpy().astype(bool).reshape(-1))
        return OccupancyGrid(bbox, tuple(occupied.shape), torch.from_numpy(packed))  # type: ignore[arg-type]

    def to_dense(self) -> Tensor:
        """bool (X, Y, Z)."""
        n = self.res[0] * self.res[1] * self.res[2]
        flat = np.unpackbits(self.bits.cpu().numpy(), count=n).astype(bool)
        return torch.from_numpy(flat).reshape(self.res).to(self.bits.device)

    def to(self, device: torch.device | str) -> "OccupancyGrid":
        return OccupancyGrid(self.bbox.to(device), self.res, self.bits.to(device))

    @property
    def voxel_size(self) -> Tensor:
        return (self.bbox[1] - self.bbox[0]) / torch.tensor(self.res, dtype=torch.float32, device=self.bbox.device)

    @property
    def num_occupied(self) -> int:
        return int(np.unpackbits(self.bits.cpu().numpy()).sum())  # padding bits are always 0

    @property
    def occupied_fraction(self) -> float:
        return self.num_occupied / (self.res[0] * self.res[1] * self.res[2])

    def voxel_index(self, points: Tensor | list[Tensor]) -> Tensor:
        """(N, 3) (or its three columns, any equal shapes) -> flat voxel index (N,) int64, -1
        outside the closed box (max faces belong to the last voxel, as in
        :meth:`NetworkGrid.locate`)."""
        return box_cells(points, self.bbox, self.res).flat(self.res)

    def lookup(self, points: Tensor | list[Tensor]) -> Tensor:
        """(N, 3) world points (or their three columns) -> bool (N,): the point's voxel is
        occupied (False outside)."""
        flat = self.voxel_index(points)
        if self._table is None or self._table.device != flat.device:
            self._table = self.to_dense().reshape(-1).to(flat.device)
        return self._table.index_select(0, flat.clamp_min(0).reshape(-1)).reshape(flat.shape) & (flat >= 0)

    def dilate(self, voxels: int = 1) -> "OccupancyGrid":
        """A new grid where every voxel within ``voxels`` (Chebyshev distance) of an occupied
        one is occupied: a (2v+1)^3 cube, done as three separable 1-D passes."""
        occ = self.to_dense()
        for axis in range(3):
            out = occ.clone()
            for s in range(1, voxels + 1):
                if s >= occ.shape[axis]:
                    break
                n = occ.shape[axis]
                out.narrow(axis, s, n - s).logical_or_(occ.narrow(axis, 0, n - s))
                out.narrow(axis, 0, n - s).logical_or_(occ.narrow(axis, s, n - s))
            occ = out
        return OccupancyGrid.from_dense(occ, self.bbox)

    def occupied_bounds(self) -> Tensor | None:
        """(2, 3) world box tightly around the occupied voxels, or None if none is (cached)."""
        if self._bounds is None:
            occ = self.to_dense()
            box = None
            if bool(occ.any()):
                lo, hi = [], []
                for axis in range(3):
                    others = tuple(a for a in range(3) if a != axis)
                    used = occ.any(dim=others[1]).any(dim=others[0]).nonzero()[:, 0]
                    lo.append(int(used[0]))
                    hi.append(int(used[-1]) + 1)
                size = self.voxel_size
                lo_t = torch.tensor(lo, dtype=size.dtype, device=size.device)
                hi_t = torch.tensor(hi, dtype=size.dtype, device=size.device)
                box = torch.stack([self.bbox[0] + lo_t * size, self.bbox[0] + hi_t * size])
            self._bounds = (box,)
        return self._bounds[0]

    def coarse_skip_grid(self, factor: int) -> Tensor:
        """Conservative coarse grid for skipping whole runs of samples (cached per factor).

        Cell (i, j, k) covers fine voxels [f(i-1), f i) etc. (one ring of cells around the box,
        hence the -1), and is True if any occupied voxel lies within one coarse cell of it:
        the coarse occupancy dilated by one cell. So a straight segment shorter than a coarse
        cell (per axis) that starts in a False cell meets no occupied voxel.

        Returns:
            bool (ceil(X/f) + 2, ceil(Y/f) + 2, ceil(Z/f) + 2).
        """
        if factor not in self._coarse:
            occ = self.to_dense()
            cres = [-(-r // factor) for r in self.res]
            padded = torch.zeros([c * factor for c in cres], dtype=torch.bool, device=occ.device)
            padded[: self.res[0], : self.res[1], : self.res[2]] = occ
            coarse = padded.reshape(cres[0], factor, cres[1], factor, cres[2], factor).any(5).any(3).any(1)
            ring = F.pad(coarse.float()[None, None], (1, 1, 1, 1, 1, 1))
            self._coarse[factor] = (F.max_pool3d(ring, 3, stride=1, padding=1)[0, 0] > 0).to(self.bits.device)
        return self._coarse[factor]

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` atomically."""
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            bbox=self.bbox.cpu().numpy().astype(np.float32),
            res=np.asarray(self.res, dtype=np.int64),
            bits=self.bits.cpu().numpy(),
        )
        atomic_write_bytes(path, buf.getvalue())

    @staticmethod
    def load(path: str | Path) -> "OccupancyGrid":
        """Read a grid written by :meth:`save` (no pickle); RunError naming the file otherwise."""
        path = Path(path)
        if not path.is_file():
            raise RunError(f"{path}: file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                bbox, res, bits = data["bbox"], data["res"], data["bits"]
        except Exception as exc:
            raise RunError(f"{path}: not a readable occupancy grid ({type(exc).__name__}: {exc})") from exc
        if bbox.shape != (2, 3) or res.shape != (3,) or bits.dtype != np.uint8 or (res < 1).any():
            raise RunError(
                f"{path}: malformed occupancy grid (bbox {bbox.shape}, res {res.tolist()}, bits {bits.dtype})"
            )
        if bits.shape != ((int(np.prod(res)) + 7) // 8,):
            raise RunError(f"{path}: occupancy grid has {bits.shape[0]} bytes for resolution {res.tolist()}")
        res_t = (int(res[0]), int(res[1]), int(res[2]))
        return OccupancyGrid(torch.from_numpy(bbox.astype(np.float32)), res_t, torch.from_numpy(bits.copy()))


def default_resolution(network_res: tuple[int, int, int], factor: int = 16) -> tuple[int, int, int]:
    """The paper's occupancy resolution: ``factor`` x the network grid per axis."""
    return network_res[0] * factor, network_res[1] * factor, network_res[2] * factor
