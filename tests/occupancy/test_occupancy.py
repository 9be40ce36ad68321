"""Occupancy grid: packing, lookup, dilation, save/load, thresholds and the lattice builder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kilonerf.data.cameras import look_at
from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.fields.multinet import MultiNetField
from kilonerf.occupancy.build import build_occupancy
from kilonerf.occupancy.grid import PAPER_ALPHA_THRESHOLD, OccupancyGrid, alpha_from_sigma, reference_step, sigma_from_alpha
from kilonerf.occupancy.carving import opaque_depth
from kilonerf.train.occupancy import add_unseen

BOX = torch.tensor([[-1.0, -0.5, 0.0], [1.0, 0.5, 1.5]])


def _random_dense(shape: tuple[int, int, int], p: float = 0.2, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p


def _centers(grid: OccupancyGrid) -> torch.Tensor:
    """(X*Y*Z, 3) voxel centres, row-major."""
    axes = [grid.bbox[0, a] + (torch.arange(grid.res[a]) + 0.5) * grid.voxel_size[a] for a in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def test_threshold_conversions() -> None:
    assert PAPER_ALPHA_THRESHOLD == pytest.approx(1 - math.exp(-10 * 0.0211))
    assert reference_step(2.0, 6.0) == pytest.approx(0.0211)
    assert sigma_from_alpha(PAPER_ALPHA_THRESHOLD, reference_step(2.0, 6.0)) == pytest.approx(10.0)
    # Same opacity per unit length at another scale: half the depth range, twice the sigma.
    assert sigma_from_alpha(PAPER_ALPHA_THRESHOLD, reference_step(1.0, 3.0)) == pytest.approx(20.0)
    assert alpha_from_sigma(sigma_from_alpha(0.3, 0.05), 0.05) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        sigma_from_alpha(1.0, 0.1)


def test_packing_lookup_and_faces() -> None:
    dense = _random_dense((5, 7, 3))  # 105 voxels: not a multiple of 8
    grid = OccupancyGrid.from_dense(dense, BOX)
    assert grid.bits.dtype == torch.uint8 and grid.bits.shape == (14,)
    assert torch.equal(grid.to_dense(), dense)
    assert grid.num_occupied == int(dense.sum())
    assert grid.occupied_fraction == pytest.approx(float(dense.float().mean()))
    assert torch.equal(grid.lookup(_centers(grid)), dense.reshape(-1))
    # Outside the box: False; the max corner belongs to the last voxel.
    full = OccupancyGrid.from_dense(torch.ones(5, 7, 3, dtype=torch.bool), BOX)
    outside = torch.stack([BOX[0] - 1e-3, BOX[1] + 1e-3, torch.tensor([0.0, 0.0, 2.0])])
    assert not bool(full.lookup(outside).any())
    assert full.voxel_index(BOX[1][None]).item() == 5 * 7 * 3 - 1
    assert full.voxel_index(BOX[0][None]).item() == 0


def test_save_load_round_trip(tmp_path: Path) -> None:
    grid = OccupancyGrid.from_dense(_random_dense((9, 4, 11), seed=1), BOX)
    path = tmp_path / "sub" / "occupancy.npz"
    grid.save(path)
    back = OccupancyGrid.load(path)
    assert back.res == grid.res and torch.equal(back.bbox, grid.bbox) and torch.equal(back.bits, grid.bits)
    assert [p.name for p in path.parent.iterdir()] == ["occupancy.npz"]  # no temp files left


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not found"):
        OccupancyGrid.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(RunError, match="junk.npz"):
        OccupancyGrid.load(junk)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, bbox=np.zeros((2, 3), np.float32), res=np.ones(3, np.int64), bits=np.array([{"x": 1}], dtype=object))
    with pytest.raises(RunError, match="pickled.npz"):
        OccupancyGrid.load(pickled)
    short = tmp_path / "short.npz"
    np.savez(short, bbox=BOX.numpy(), res=np.array([4, 4, 4]), bits=np.zeros(3, np.uint8))
    with pytest.raises(RunError, match="bytes for resolution"):
        OccupancyGrid.load(short)


def test_dilation_matches_max_pool() -> None:
    single = torch.zeros(7, 7, 7, dtype=torch.bool)
    single[3, 3, 3] = True
    out = OccupancyGrid.from_dense(single, BOX).dilate(1).to_dense()
    assert out.sum() == 27 and bool(out[2:5, 2:5, 2:5].all())
    corner = torch.zeros(6, 5, 4, dtype=torch.bool)
    corner[0, 0, 0] = True
    assert OccupancyGrid.from_dense(corner, BOX).dilate(2).to_dense().sum() == 27  # clipped 3^3
    dense = _random_dense((9, 6, 8), p=0.03, seed=2)
    for v in (1, 2):
        ref = F.max_pool3d(dense.float()[None, None], 2 * v + 1, stride=1, padding=v)[0, 0] > 0
        assert torch.equal(OccupancyGrid.from_dense(dense, BOX).dilate(v).to_dense(), ref)


class _Sphere:
    """Analytic field: constant density inside a sphere, zero outside."""

    def __init__(self, center: torch.Tensor, radius: float, sigma: float = 100.0) -> None:
        self.center, self.radius, self.sigma = center, radius, sigma
        self.max_batch = 0

    def density(self, points: torch.Tensor) -> torch.Tensor:
        self.max_batch = max(self.max_batch, points.shape[0])
        return ((points - self.center).norm(dim=-1) < self.radius).float() * self.sigma

    def forward(self, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(points), torch.ones_like(points) * 0.5


def test_sphere_marks_touched_voxels_and_few_others() -> None:
    res = (20, 10, 15)
    center, radius = torch.tensor([0.1, 0.05, 0.8]), 0.37
    field = _Sphere(center, radius)
    grid = build_occupancy(field, BOX, res, ref_step=0.01, chunk=4096)
    assert field.max_batch <= 4096
    occ = grid.to_dense()
    # Exact overlap: distance from the centre to the nearest point of each voxel box.
    size = grid.voxel_size
    lo = torch.stack(torch.meshgrid(*[torch.arange(r) for r in res], indexing="ij"), -1) * size + BOX[0]
    nearest = torch.minimum(torch.maximum(center, lo), lo + size)
    dist = (nearest - center).norm(dim=-1)
    touched = dist < radius
    # Every marked voxel has a sample in the sphere, so it touches it.
    assert not bool((occ & ~touched).any())
    # Every voxel the sphere enters deeper than half a lattice diagonal contains a sample in it.
    deep = dist < radius - float((size / 2).norm()) / 2
    assert bool(occ[deep].all())
    # Missed: only shallow slivers, a small fraction; one voxel of dilation covers all of them.
    assert int((touched & ~occ).sum()) <= 0.25 * int(touched.sum())
    assert bool(grid.dilate(1).to_dense()[touched].all())


def test_lattice_builder_matches_brute_force_and_threshold() -> None:
    # Random tiny-MLP field: the shared lattice (with slab carry) must give exactly the grid of
    # 27 independent evaluations per voxel.
    field = MultiNetField(BOX, max_res=2, shared_init=False, seed=4)
    res = (6, 3, 5)
    step = 0.02
    size = (BOX[1] - BOX[0]) / torch.tensor(res)
    offs = torch.stack(torch.meshgrid(*[torch.tensor([0.0, 0.5, 1.0])] * 3, indexing="ij"), -1).reshape(-1, 3)
    lo = torch.stack(torch.meshgrid(*[torch.arange(r) for r in res], indexing="ij"), -1).reshape(-1, 1, 3) * size + BOX[0]
    pts = (lo + offs * size).reshape(-1, 3)
    with torch.no_grad():
        sigma_max = field.density(pts).reshape(-1, 27).amax(dim=1)
    # A threshold halfway between two voxels' maxima (robust to rounding in the lattice
    # positions), so that about half the voxels are occupied.
    ordered = sigma_max.sort().values
    mid = ordered.shape[0] // 2
    thr = alpha_from_sigma(float(ordered[mid] + ordered[mid + 1]) / 2, step)
    ref = (1 - torch.exp(-sigma_max * step) > thr).reshape(res)
    assert 0.3 < float(ref.float().mean()) < 0.7
    grid = build_occupancy(field, BOX, res, thr, ref_step=step, chunk=64)
    big_chunk = build_occupancy(field, BOX, res, thr, ref_step=step, chunk=1 << 16)
    assert torch.equal(grid.bits, big_chunk.bits)
    assert torch.equal(grid.to_dense(), ref)


def test_constant_field_threshold_semantics() -> None:
    class Const:
        def __init__(self, s: float) -> None:
            self.s = s

        def density(self, points: torch.Tensor) -> torch.Tensor:
            return torch.full((points.shape[0],), self.s)

    sigma_thr = sigma_from_alpha(PAPER_ALPHA_THRESHOLD, 0.0211)
    above = build_occupancy(Const(sigma_thr * 1.01), BOX, (2, 2, 2), ref_step=0.0211)  # type: ignore[arg-type]
    below = build_occupancy(Const(sigma_thr * 0.99), BOX, (2, 2, 2), ref_step=0.0211)  # type: ignore[arg-type]
    assert above.occupied_fraction == 1.0 and below.occupied_fraction == 0.0


# ---- voxels no camera sees ------------------------------------------------------------------
class _Cube:
    """Analytic field: constant density inside an axis-aligned cube, zero outside."""

    def __init__(self, half: float, sigma: float = 200.0) -> None:
        self.half, self.sigma = half, sigma

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return (points.abs() < self.half).all(dim=-1).float() * self.sigma

    def forward(self, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(points), torch.ones_like(points) * 0.5


def test_opaque_depth_of_a_slab_is_where_transmittance_halves() -> None:
    cube = _Cube(0.5, sigma=4.0)
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.9, 0.0, 3.0], [0.0, 0.2, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0]]).expand(3, 3)
    near, far = torch.full((3,), 1.0), torch.full((3,), 5.0)
    step = 0.01
    depth = opaque_depth(cube, origins, dirs, near, far, step, block=16)
    truth = 2.5 + math.log(2.0) / 4.0  # enters the cube at t = 2.5, then tau = 4 (t - 2.5)
    assert truth - step - 1e-4 <= float(depth[0]) <= truth + 1e-4
    assert math.isinf(float(depth[1]))  # misses the cube
    assert float(depth[2]) == float(depth[0])
    # A segment ending before the crossing never crosses.
    assert math.isinf(float(opaque_depth(cube, origins[:1], dirs[:1], near[:1], torch.tensor([2.6]), step)[0]))


def test_unseen_voxels_behind_a_cube_seen_from_above() -> None:
    """Cameras above a solid cube: the space under it stays marked, space in front does not."""
    size, focal = 24, 24 / (2 * math.tan(0.4))
    eyes = [np.array([0.0, 0.0, 3.5])] + [np.array([0.8 * math.cos(a), 0.8 * math.sin(a), 3.5]) for a in (0.0, 2.1, 4.2)]
    poses = np.stack([look_at(e) for e in eyes])
    n = len(eyes)
    scene = Scene(images=[np.zeros((size, size, 3), np.uint8)] * n,
                  intrinsics=np.tile([focal, focal, size / 2, size / 2], (n, 1)), poses=poses,
                  splits={"train": np.arange(n)}, bbox=np.array([[-1.0] * 3, [1.0] * 3]), near=1.0, far=6.0)
    cube = _Cube(0.3)
    box = torch.tensor(scene.bbox, dtype=torch.float32)
    grid = build_occupancy(cube, box, (20, 20, 20), ref_step=0.02)
    kept = add_unseen(grid, cube, scene, torch.device("cpu"))
    dense, before = kept.to_dense(), grid.to_dense()
    assert torch.equal(dense & before, before)  # only adds
    lookup = kept.lookup(torch.tensor([[0.0, 0.0, -0.5], [0.0, 0.0, -0.9], [0.05, 0.05, 0.0],
                                       [0.0, 0.0, 0.5], [0.0, 0.0, 0.9], [0.8, 0.8, 0.8], [0.0, 0.8, 0.2]]))
    assert lookup.tolist() == [True, True, True, False, False, False, False]
    # The shadow under the cube is a column about the cube's width, not the whole lower half.
    assert int(dense.sum()) < 0.25 * dense.numel()
