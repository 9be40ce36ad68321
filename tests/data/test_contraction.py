"""The ``unbounded`` scene type: MERF's piecewise-projective contraction (round trip, rays
straight within each piece and monotone along it, pieces in order), the reachable voxels,
detection, joining pieces, and the fast renderer against a sample-by-sample reference in
contracted space."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from kilonerf.data.cameras import camera_rays, look_at, pixel_coords
from kilonerf.data.contraction import OUTER, ContractionMap
from kilonerf.data.scene import Scene
from kilonerf.data.scene_types import apply_scene_type, detect_scene_type, look_at_point
from kilonerf.fields.multinet import MultiNetField
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.render.student import StudentRenderer
from kilonerf.render.volume import composite_weights, join_pieces


def _map() -> ContractionMap:
    return ContractionMap(np.array([0.1, -0.2, 0.3]), np.array([1.0, 1.5, 0.8]), 0.0)


def _rays(n: int, seed: int, spread: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g, dtype=torch.float64) * spread
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return o, d / d.norm(dim=1, keepdim=True)


def test_points_round_trip_and_stay_in_the_outer_cube() -> None:
    m = _map()
    o, d = _rays(500, 0)
    t = torch.rand(500, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1e3
    world = torch.cat([o, o + t * d, o + 3.0 * d])
    c = m.map_points(world)
    assert float(c.abs().max()) < OUTER
    torch.testing.assert_close(m.unmap_points(c), world, rtol=1e-9, atol=1e-9)
    # The foreground box itself is only scaled onto [-1, 1]^3.
    inner = torch.as_tensor(m.centre) + (torch.rand(50, 3, dtype=torch.float64) * 2 - 1) * torch.as_tensor(m.half)
    torch.testing.assert_close(m.map_points(inner), (inner - torch.as_tensor(m.centre)) / torch.as_tensor(m.half))


def test_rays_are_straight_pieces_in_order() -> None:
    m = _map()
    n = 400
    o, d = _rays(n, 2)
    rays = m.map_rays(o, d)
    k = rays.pieces
    assert 1 <= k <= 7 and rays.origins.shape == (n * k, 3)
    torch.testing.assert_close(rays.near, torch.zeros(n * k, dtype=torch.float64))
    origin, unit, length = rays.origins.reshape(n, k, 3), rays.dirs.reshape(n, k, 3), rays.far.reshape(n, k)
    # Every world point along a ray lies on one of its pieces (straight there), and going
    # further along the world ray never goes back to an earlier piece or along a piece.
    t = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-3, 4, 120, dtype=torch.float64)])
    c = m.map_points((o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3)).reshape(n, len(t), 3)
    rel = c[:, :, None] - origin[:, None]  # (n, T, K, 3)
    s = (rel * unit[:, None]).sum(-1).clamp_min(0.0)
    s = torch.minimum(s, length[:, None])
    dist = (rel - s[..., None] * unit[:, None]).norm(dim=-1)
    dist = torch.where(length[:, None] > 0, dist, torch.full_like(dist, math.inf))
    best, piece = dist.min(dim=-1)
    assert float(best.max()) < 1e-9
    assert bool((piece.diff(dim=1) >= 0).all())
    s_on = s.gather(2, piece[..., None]).squeeze(-1)
    same = piece.diff(dim=1) == 0
    assert bool((s_on.diff(dim=1)[same] >= -1e-9).all())
    # Each ray's last piece ends at infinity, on a face of the outer cube.
    last = (length > 0).long().cumsum(1).argmax(1)
    end = origin[torch.arange(n), last] + length[torch.arange(n), last, None] * unit[torch.arange(n), last]
    torch.testing.assert_close(end.abs().max(dim=1).values, torch.full((n,), OUTER, dtype=torch.float64))


def test_reachable_voxels() -> None:
    m = _map()
    box = torch.tensor([[-2.0] * 3, [2.0] * 3])
    mask = m.voxel_mask(box, (8, 8, 8))
    # Voxels of 0.5: a corner voxel is wholly beyond 1 on all axes, a face slab's is not.
    assert not bool(mask[0, 0, 0]) and not bool(mask[0, 0, 4]) and bool(mask[0, 4, 4]) and bool(mask[4, 4, 4])
    o, d = _rays(300, 3)
    t = torch.logspace(-2, 4, 60, dtype=torch.float64)
    c = m.map_points((o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3))
    idx = ((c + 2.0) / 0.5).floor().long().clamp(0, 7)
    assert bool(mask[idx[:, 0], idx[:, 1], idx[:, 2]].all())  # every mapped point is in a kept voxel
    assert 0.4 < float(mask.float().mean()) < 0.7  # the cube and its six slabs: half of [-2, 2]^3


def orbit_scene(n: int = 8, size: int = 12) -> Scene:
    poses = np.stack([look_at(np.array([4 * math.cos(a), 4 * math.sin(a), 1.0]))
                      for a in np.linspace(0, 2 * math.pi, n, endpoint=False)])  # fmt: skip
    intr = np.tile([14.0, 14.0, size / 2, size / 2], (n, 1))
    images = [np.zeros((size, size, 3), np.uint8) for _ in range(n)]
    return Scene(images, intr, poses, {"train": np.arange(n)}, np.array([[-1.0] * 3, [1.0] * 3]), 2.0, 6.0,
                 background=np.array([0.2, 0.5, 0.9], np.float32))  # fmt: skip


def test_unbounded_scene_from_the_cameras() -> None:
    scene = orbit_scene()
    assert detect_scene_type(scene) == "unbounded"
    np.testing.assert_allclose(look_at_point(scene.poses), [0.0, 0.0, 0.0], atol=1e-9)
    out = apply_scene_type(scene)
    assert out.scene_type == "unbounded" and out.near == 0.0
    np.testing.assert_array_equal(out.bbox, [[-OUTER] * 3, [OUTER] * 3])
    assert out.alphas is not None and all((a == 255).all() for a in out.alphas)
    # Half the median camera distance (sqrt 17) around the point the cameras look at.
    np.testing.assert_allclose(out.ray_map.half, np.full(3, 0.5 * math.sqrt(17.0)))  # type: ignore[union-attr]
    # A box that came with the data is the foreground box.
    boxed = apply_scene_type(replace(scene, box_given=True), "unbounded").ray_map
    np.testing.assert_allclose(boxed.half, np.ones(3))  # type: ignore[union-attr]


def test_join_pieces_equals_one_composite() -> None:
    g = torch.Generator().manual_seed(5)
    n, k, s = 6, 3, 5
    tau = torch.rand(n, k, s, generator=g, dtype=torch.float64) * 0.8
    rgb = torch.rand(n, k, s, 3, generator=g, dtype=torch.float64)
    bg = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    piece_ids = torch.arange(n * k).repeat_interleave(s)
    w, _, _ = composite_weights(tau.reshape(-1), piece_ids, n * k)
    piece_rgb = torch.zeros(n * k, 3, dtype=torch.float64).index_add(0, piece_ids, w[:, None] * rgb.reshape(-1, 3))
    piece_acc = torch.zeros(n * k, dtype=torch.float64).index_add(0, piece_ids, w)
    joined, acc = join_pieces(piece_rgb, piece_acc, k, bg)
    ray_ids = torch.arange(n).repeat_interleave(k * s)
    w_all, _, _ = composite_weights(tau.reshape(-1), ray_ids, n)
    ref_acc = torch.zeros(n, dtype=torch.float64).index_add(0, ray_ids, w_all)
    ref = torch.zeros(n, 3, dtype=torch.float64).index_add(0, ray_ids, w_all[:, None] * rgb.reshape(-1, 3))
    torch.testing.assert_close(joined, ref + (1 - ref_acc)[:, None] * bg)
    torch.testing.assert_close(acc, ref_acc)


def _reference(renderer: StudentRenderer, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Sample by sample along every piece of every camera ray, one composite per camera ray."""
    rays = renderer.field_rays(origins, dirs)
    step = renderer.step(rays)
    student, occ = renderer.student, renderer.occupancy
    assert occ is not None and renderer.background is not None
    out = []
    for i in range(origins.shape[0]):
        colour, trans = torch.zeros(3), 1.0
        for j in range(i * rays.pieces, (i + 1) * rays.pieces):
            length = float(rays.far[j] - rays.near[j])
            if length <= 0:
                continue
            t = rays.near[j] + torch.arange(int(math.floor(length / step + 1e-6)) + 1) * step
            pts = rays.origins[j] + t[:, None] * rays.dirs[j]
            with torch.no_grad():
                sigma, rgb = student(pts, rays.dirs[j].expand_as(pts))
            sigma = torch.where(occ.lookup(pts) & student.grid.inside(pts), sigma, 0.0)
            for a in range(len(t)):
                alpha = 1.0 - math.exp(-float(sigma[a]) * step)
                colour += trans * alpha * rgb[a]
                trans *= 1.0 - alpha
        out.append(colour + trans * renderer.background)
    return torch.stack(out)


@pytest.mark.parametrize("backend", ["torch_ref", "cpu"])
def test_fast_renderer_matches_the_reference_in_contracted_space(backend: str) -> None:
    if backend == "cpu":
        from kilonerf.kernels import get_backend

        try:
            get_backend("cpu")
        except Exception as exc:  # no compiler: the compiled backend is tested elsewhere
            pytest.skip(f"compiled backend unavailable: {exc}")
    scene = apply_scene_type(orbit_scene(), "unbounded")
    box = torch.as_tensor(scene.bbox, dtype=torch.float32)
    student = MultiNetField(box, max_res=4, shared_init=False, seed=3)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(3.0)
    centres = torch.stack(torch.meshgrid(*[torch.linspace(-1.9, 1.9, 20)] * 3, indexing="ij"), dim=-1)
    occ = OccupancyGrid.from_dense((centres.norm(dim=-1) < 1.2) | (centres.abs().amax(dim=-1) > 1.7), box)
    renderer = StudentRenderer(student, occ, scene, num_samples=96, chunk_rays=64, backend=backend)
    o, d = camera_rays(torch.as_tensor(scene.poses[1], dtype=torch.float32),
                       torch.as_tensor(scene.intrinsics[1], dtype=torch.float32), pixel_coords(12, 12))  # fmt: skip
    sub = torch.arange(0, 144, 5)
    res = renderer.render_output(o[sub], d[sub], ert_threshold=0.0)
    assert res.samples_evaluated > 0
    torch.testing.assert_close(res.rgb, _reference(renderer, o[sub], d[sub]), rtol=0, atol=2e-4)
