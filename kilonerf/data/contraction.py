"""The ``unbounded`` scene type's map: MERF's piecewise-projective contraction.

The foreground box is first scaled, axis by axis, onto the cube [-1, 1]^3, which stays as it
is. A point outside it, whose largest coordinate (in magnitude) is x_j, becomes
``x_i / |x_j|`` for i != j and ``sign(x_j) (2 - 1 / |x_j|)`` for j: all of space lands in
the cube and six 1 x 2 x 2 slabs on its faces, inside [-2, 2]^3, with infinity on the outer
faces. The slabs meet the cube seamlessly but not each other: where a ray passes from one
pyramid into the next, it jumps from one slab to the other (each piece is rendered on its own,
so that costs nothing), and the edges and corners of [-2, 2]^3 stay empty.

Why this one and not the L∞ contraction of mip-NeRF 360 / nerfstudio (``(2 - 1/|x|) x/|x|``
with the L∞ norm, which lands in the same cube): inside each of its seven pieces (the cube,
and the six pyramids outside its faces, one per signed axis) this map is a projective map (all
coordinates are affine functions divided by the one affine function |x_j|), so a straight
world ray stays straight there. A ray is then at most seven straight pieces, each rendered
like any other ray: box intersection, fixed-step marching, the occupancy grid's empty-space
skipping (exact, as the fast renderer needs) and early termination all stay as they are, and
so does the compiled renderer. Under the L∞ contraction rays curve everywhere outside the
cube, so every renderer would need a new, per-sample sampler. Evenly spaced steps along a
contracted piece are evenly spaced in disparity (1 / distance) far away: dense near the
foreground where the detail is, sparse towards the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kilonerf.data.scene import FieldRays

OUTER = 2.0
"""Half-size of the contracted space: infinity maps to the faces of [-2, 2]^3."""


def _piece_of(xh: Tensor) -> Tensor:
    """(M,) int64 piece of normalised points (M, 3): 0 inside [-1, 1]^3, else 1 + 2 j + (x_j > 0)
    for the coordinate j of largest magnitude."""
    mag, axis = xh.abs().max(dim=1)
    positive = xh.gather(1, axis[:, None]).squeeze(1) > 0
    return torch.where(mag <= 1.0, torch.zeros_like(axis), 1 + 2 * axis + positive.long())


def _contract(xh: Tensor, piece: Tensor) -> Tensor:
    """Normalised points (M, 3) -> contracted points (M, 3), each by the formula of its ``piece``
    (M,) (so a point where two pyramids meet goes to the slab of the piece it is taken in)."""
    axis = ((piece - 1).clamp_min(0) // 2)[:, None]
    xj = xh.gather(1, axis)
    mag = torch.where(piece[:, None] > 0, xj.abs().clamp_min(1.0), torch.ones_like(xj))
    out = xh / mag
    outer_j = torch.sign(xj) * (OUTER - 1.0 / mag)
    return out.scatter(1, axis, torch.where(piece[:, None] > 0, outer_j, xj))


def _contract_infinity(dh: Tensor, piece: Tensor) -> Tensor:
    """Where rays with normalised directions ``dh`` (M, 3) end at infinity in outer ``piece``."""
    axis = ((piece - 1).clamp_min(0) // 2)[:, None]
    dj = dh.gather(1, axis)
    out = dh / dj.abs().clamp_min(1e-300)
    return out.scatter(1, axis, torch.sign(dj) * OUTER)


@dataclass(frozen=True)
class ContractionMap:
    """World rays -> straight pieces in contracted space (see the module docstring)."""

    centre: np.ndarray
    """(3,) centre of the foreground box in world coordinates."""
    half: np.ndarray
    """(3,) its half-sizes."""
    near: float
    """World distance along each ray where it starts."""

    def _frame(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return (torch.as_tensor(self.centre, dtype=like.dtype, device=like.device),
                torch.as_tensor(self.half, dtype=like.dtype, device=like.device))  # fmt: skip

    def map_points(self, points: Tensor) -> Tensor:
        """World points (N, 3) -> contracted points (N, 3) in [-2, 2]^3."""
        centre, half = self._frame(points)
        xh = (points - centre) / half
        return _contract(xh, _piece_of(xh))

    def unmap_points(self, points: Tensor) -> Tensor:
        """Contracted points (N, 3) strictly inside [-2, 2]^3 -> world points (inverse of
        :meth:`map_points`)."""
        centre, half = self._frame(points)
        mag, axis = points.abs().max(dim=1, keepdim=True)
        outer = mag > 1.0
        # |c_j| = 2 - 1 / |x_j|  <=>  |x_j| = 1 / (2 - |c_j|); the other coordinates scale by |x_j|.
        xmag = 1.0 / (OUTER - mag).clamp_min(1e-12)
        xh = torch.where(outer, points * xmag, points)
        cj = points.gather(1, axis)
        xh = torch.where(outer, xh.scatter(1, axis, torch.sign(cj) * xmag), xh)
        return xh * half + centre

    def voxel_mask(self, bbox: Tensor, res: tuple[int, int, int]) -> Tensor:
        """(X, Y, Z) bool: the voxels of a ``res`` grid over ``bbox`` (2, 3) that some point of
        space maps into, i.e. not wholly in the empty edges and corners of [-2, 2]^3 (where two
        or more coordinates exceed 1 in magnitude)."""
        beyond = []
        for a in range(3):
            edges = torch.linspace(float(bbox[0, a]), float(bbox[1, a]), res[a] + 1, dtype=torch.float64)
            lo, hi = edges[:-1], edges[1:]
            nearest = torch.where((lo < 0) & (hi > 0), torch.zeros_like(lo), torch.minimum(lo.abs(), hi.abs()))
            beyond.append((nearest >= 1.0).long())
        count = beyond[0][:, None, None] + beyond[1][None, :, None] + beyond[2][None, None, :]
        return count <= 1

    def map_rays(self, origins: Tensor, dirs: Tensor) -> FieldRays:
        """World rays (N, 3), starting :attr:`near` along ``dirs``, -> their straight pieces in
        contracted space (:class:`FieldRays`, K = the most pieces any of these rays has, at most 7)."""
        dtype = origins.dtype
        o, d = origins.double(), dirs.double()
        centre, half = self._frame(o)
        oh, dh = (o - centre) / half, d / half
        n = o.shape[0]
        # Where the piece can change: a coordinate crosses +-1, or two magnitudes swap.
        cand = [(s - oh[:, i]) / dh[:, i] for i in range(3) for s in (-1.0, 1.0)]
        for i, j in ((0, 1), (0, 2), (1, 2)):
            cand.append((oh[:, j] - oh[:, i]) / (dh[:, i] - dh[:, j]))
            cand.append(-(oh[:, i] + oh[:, j]) / (dh[:, i] + dh[:, j]))
        t_start = torch.full((n, 1), float(self.near), dtype=torch.float64, device=o.device)
        c = torch.stack(cand, dim=1)
        c = torch.where(torch.isfinite(c) & (c > t_start), c, torch.full_like(c, torch.inf))
        bounds = torch.cat([t_start, c.sort(dim=1).values, torch.full_like(t_start, torch.inf)], dim=1)
        lo, hi = bounds[:, :-1], bounds[:, 1:]  # (N, 13) intervals
        mid = torch.where(torch.isinf(hi), lo + 1.0, 0.5 * (lo + hi))
        xmid = oh[:, None, :] + mid[..., None] * dh[:, None, :]
        piece = _piece_of(xmid.reshape(-1, 3)).reshape(lo.shape)
        axis = dh.abs().argmax(dim=1)
        last = 1 + 2 * axis + (dh.gather(1, axis[:, None]).squeeze(1) > 0).long()
        piece = torch.where(torch.isinf(hi) & torch.isfinite(lo), last[:, None], piece)
        valid = torch.isfinite(lo) & (hi > lo)
        # Merge consecutive intervals of one piece (empty intervals in between do not split it).
        pos = torch.arange(lo.shape[1], device=o.device).expand_as(lo)
        last_valid = torch.where(valid, pos, torch.full_like(pos, -1)).cummax(dim=1).values
        filled = piece.gather(1, last_valid.clamp_min(0))
        prev = torch.cat([torch.full_like(filled[:, :1], -1), torch.where(last_valid >= 0, filled, -1)[:, :-1]], dim=1)
        start = valid & (piece != prev)
        slot = start.long().cumsum(dim=1) - 1
        k = int(slot.max()) + 1 if n else 1
        rows = torch.arange(n, device=o.device)[:, None].expand_as(lo)
        t0 = torch.full((n, k), torch.inf, dtype=torch.float64, device=o.device)
        pid = torch.full((n, k), -1, dtype=torch.long, device=o.device)
        t0[rows[start], slot[start]] = lo[start]
        pid[rows[start], slot[start]] = piece[start]
        t1 = torch.cat([t0[:, 1:], torch.full_like(t0[:, :1], torch.inf)], dim=1)
        used = pid >= 0
        pid_c = pid.clamp_min(0).reshape(-1)
        ohk = oh[:, None, :].expand(n, k, 3).reshape(-1, 3)
        dhk = dh[:, None, :].expand(n, k, 3).reshape(-1, 3)
        t0f = torch.where(used, t0, 0.0).reshape(-1, 1)
        t1f = t1.reshape(-1, 1)
        c0 = _contract(ohk + t0f * dhk, pid_c)
        c1 = torch.where(torch.isinf(t1f), _contract_infinity(dhk, pid_c),
                         _contract(ohk + torch.where(torch.isinf(t1f), 0.0, t1f) * dhk, pid_c))  # fmt: skip
        vec = torch.where(used.reshape(-1, 1), c1 - c0, 0.0)
        length = vec.norm(dim=1)
        unit = torch.where(length[:, None] > 0, vec / length.clamp_min(1e-300)[:, None], vec.new_tensor([0.0, 0.0, 1.0]))
        return FieldRays(c0.to(dtype), unit.to(dtype), torch.zeros_like(length, dtype=dtype), length.to(dtype), k)
