"""Building an occupancy grid from any radiance field: voxels where its density is high."""

from __future__ import annotations

import torch
from tqdm import tqdm
import torch.nn.functional as F
from torch import Tensor

from kilonerf.fields.base import RadianceField
from kilonerf.occupancy.grid import PAPER_ALPHA_THRESHOLD, OccupancyGrid, sigma_from_alpha


@torch.no_grad()
def build_occupancy(
    field: RadianceField,
    bbox: Tensor,
    resolution: tuple[int, int, int],
    threshold: float = PAPER_ALPHA_THRESHOLD,
    *,
    ref_step: float,
    samples_per_axis: int = 3,
    chunk: int = 1 << 18,
    device: torch.device | str = "cpu",
    progress: bool = True,
    part: tuple[int, int] = (0, 1),
) -> OccupancyGrid:
    """Mark voxels where ``field`` is dense (with a progress bar unless ``progress`` is False).

    Each voxel gets ``s = samples_per_axis`` samples per axis on a lattice that includes its
    corners, so neighbours share their faces: density is evaluated once on the
    ((s-1) X + 1, (s-1) Y + 1, (s-1) Z + 1) lattice and reduced by a max over each voxel's
    s^3 block. A voxel is occupied if any sample has 1 - exp(-sigma * ref_step) > threshold.
    The lattice is streamed in slabs along x, ``chunk`` points per field call.

    Args:
        field: any radiance field (``density`` is called on (<= chunk, 3) world points).
        bbox: (2, 3) box to cover; resolution: voxels per axis (X, Y, Z).
        threshold: opacity threshold over ``ref_step`` (see the module docstring).
        ref_step: e.g. :func:`reference_step` (near, far) of the scene.
        part: (i, n): evaluate only the i-th of n equal runs of slabs (one process's share),
            leaving the other voxels empty; the union of the n parts is the whole grid.
    """
    if samples_per_axis < 2:
        raise ValueError("samples_per_axis must be >= 2 (the lattice includes voxel corners)")
    sigma_thr = sigma_from_alpha(threshold, ref_step)
    bbox = torch.as_tensor(bbox, dtype=torch.float32).reshape(2, 3).to(device)
    res = tuple(int(r) for r in resolution)
    k = samples_per_axis - 1
    lattice = [k * r + 1 for r in res]
    # Clamped so that rounding never puts the max-face lattice points outside the box, where
    # a network grid field would report zero density.
    coords = [
        (bbox[0, a] + (bbox[1, a] - bbox[0, a]) * torch.arange(lattice[a], device=device) / (k * res[a]))
        .clamp_max(bbox[1, a])
        for a in range(3)
    ]
    plane = lattice[1] * lattice[2]
    slab_voxels = max(1, (4 * chunk) // (plane * k))
    yz = torch.stack(torch.meshgrid(coords[1], coords[2], indexing="ij"), dim=-1).reshape(-1, 2)
    out = torch.zeros(res, dtype=torch.bool, device=device)
    carry: Tensor | None = None  # the last lattice plane of the previous slab, shared
    starts = list(range(0, res[0], slab_voxels))
    i, n = part
    starts = starts[len(starts) * i // n : len(starts) * (i + 1) // n]
    for v0 in tqdm(starts, desc="occupancy", unit="slab", disable=not progress):
        v1 = min(v0 + slab_voxels, res[0])
        p0 = k * v0 + (0 if carry is None else 1)
        xs = coords[0][p0 : k * v1 + 1]
        pts = torch.cat([xs.repeat_interleave(plane)[:, None], yz.repeat(len(xs), 1)], dim=1)
        sig = torch.cat([field.density(c).reshape(-1).float() for c in torch.split(pts, chunk)])
        sig = sig.reshape(len(xs), lattice[1], lattice[2])
        if carry is not None:
            sig = torch.cat([carry, sig])
        carry = sig[-1:]
        block = F.max_pool3d(sig[None, None], kernel_size=k + 1, stride=k)[0, 0]
        out[v0:v1] = block > sigma_thr
    return OccupancyGrid.from_dense(out, bbox.cpu())
