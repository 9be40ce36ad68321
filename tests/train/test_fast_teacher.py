"""The fast grid teacher: interpolation, packed compositing, marching, field interface,
training on a tiny synthetic sphere scene, and bit-identical resume."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kilonerf.data.cameras import camera_rays, pixel_coords
from kilonerf.data.procedural import look_at
from kilonerf.data.rays import RayTable
from kilonerf.data.scene import Scene
from kilonerf.kernels.encoding import positional_encoding
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.occupancy.sampling import march_occupied
from kilonerf.render.packed import packed_distortion
from kilonerf.fields.grid_sampling import corner_weights, resample_grid, to_lattice
from kilonerf.kernels.grid_ops import grid_lerp
from kilonerf.fields.grid_teacher import GridTeacherField
from kilonerf.train.fast_teacher import FastTeacherTrainer
from kilonerf.train.config import FastTeacherConfig


# Tiny tensors: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- interpolation --------------------------------------------------------------------------
def test_grid_lerp_matches_grid_sample_values_and_grads() -> None:
    g = torch.Generator().manual_seed(0)
    c, res = 3, (5, 7, 4)  # (Rx, Ry, Rz)
    grid = torch.randn(res[2], res[1], res[0], c, generator=g, dtype=torch.float64, requires_grad=True)
    ref_grid = grid.detach().permute(3, 0, 1, 2).clone().requires_grad_(True)
    box_min, box_max = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 2.0, 1.5], dtype=torch.float64)
    pts = box_min + torch.rand(200, 3, generator=g, dtype=torch.float64) * (box_max - box_min)
    pts[:4] = torch.stack([box_min, box_max, box_min + 0.5 * (box_max - box_min), box_max])  # faces and corners
    idx, w = corner_weights(to_lattice(pts, box_min, box_max, res), res)
    ours = grid_lerp(grid, c, idx, w)  # float64: the torch implementation
    norm = (pts - box_min) / (box_max - box_min) * 2 - 1
    ref = F.grid_sample(ref_grid[None], norm.view(1, -1, 1, 1, 3), align_corners=True).view(c, -1).t()
    assert torch.allclose(ours, ref, atol=1e-10)
    probe = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    (ours * probe).sum().backward()  # into grid.grad, in place
    (g_ref,) = torch.autograd.grad((ref * probe).sum(), ref_grid)
    assert torch.allclose(grid.grad.permute(3, 0, 1, 2), g_ref, atol=1e-10)


def test_resample_grid_reproduces_a_linear_function() -> None:
    old_min, old_max = torch.zeros(3), torch.ones(3)
    axes = [torch.linspace(0, 1, r) for r in (6, 5, 4)]  # x, y, z nodes
    zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    values = (1.0 + 2.0 * xx - 3.0 * yy + 0.5 * zz)[None]
    new_min, new_max = torch.tensor([0.2, 0.1, 0.3]), torch.tensor([0.9, 0.8, 1.5])
    out = resample_grid(values, old_min, old_max, new_min, new_max, (8, 9, 10), fill=-7.0)
    assert out.shape == (1, 10, 9, 8)
    zs = torch.linspace(0.3, 1.5, 10)
    inside = zs <= 1.0 + 1e-6
    nx, ny = torch.linspace(0.2, 0.9, 8), torch.linspace(0.1, 0.8, 9)
    z3, y3, x3 = torch.meshgrid(zs, ny, nx, indexing="ij")
    expect = 1.0 + 2.0 * x3 - 3.0 * y3 + 0.5 * z3
    assert torch.allclose(out[0][inside], expect[inside], atol=1e-5)
    assert torch.all(out[0][~inside] == -7.0)


# ---- packed compositing and marching --------------------------------------------------------
def test_packed_distortion_matches_double_sum() -> None:
    g = torch.Generator().manual_seed(3)
    n, s, delta = 5, 9, 0.1
    w = torch.rand(n, s, generator=g, dtype=torch.float64)
    t = torch.cumsum(torch.rand(n, s, generator=g, dtype=torch.float64) + 0.1, dim=1)
    keep = torch.rand(n, s, generator=g) < 0.7
    keep[2] = False
    ray_id = torch.arange(n)[:, None].expand(n, s)[keep]
    got = packed_distortion(w[keep], t[keep], delta, ray_id, n)
    wk = torch.where(keep, w, 0.0)
    ref = (wk[:, :, None] * wk[:, None, :] * (t[:, :, None] - t[:, None, :]).abs()).sum((1, 2))
    ref = ref + (wk.square() * delta / 3).sum(1)
    assert torch.allclose(got, ref, atol=1e-10) and got[2] == 0


def test_march_occupied_matches_brute_force() -> None:
    """The jittered march of the grid teacher: samples near + (k + u) * step before far, kept in
    occupied cells (the bitfield is (Cz, Cy, Cx), the occupancy grid (X, Y, Z))."""
    g = torch.Generator().manual_seed(2)
    n = 50
    origins = torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 3.0])
    dirs = F.normalize(torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    box_min, box_max = -torch.ones(3), torch.ones(3)
    occ = torch.rand(4, 5, 6, generator=g) < 0.5  # (Cz, Cy, Cx)
    near, far = torch.full((n,), 1.5), torch.full((n,), 4.5)
    far[0] = near[0]  # an empty segment
    jitter = torch.rand(n, generator=g)
    step = 0.05
    count = torch.ceil(((far - near) / step - jitter).clamp_min(0)).long()
    grid = OccupancyGrid.from_dense(occ.permute(2, 1, 0), torch.stack([box_min, box_max]))
    got = march_occupied(origins, dirs, near + jitter * step, torch.full((n,), step), torch.zeros_like(count),
                         count, grid, max_points=512)  # several sub-batches
    ks = torch.arange(200, dtype=torch.float32)
    t = near[:, None] + (ks + jitter[:, None]) * step
    pts = origins[:, None] + t[..., None] * dirs[:, None]
    cells = torch.tensor([6, 5, 4])
    c = ((pts - box_min) / (box_max - box_min) * cells).floor().long()
    inside = ((c >= 0) & (c < cells)).all(-1)
    c = torch.minimum(c.clamp_min(0), cells - 1)
    ok = (t < far[:, None]) & inside & occ[c[..., 2], c[..., 1], c[..., 0]]
    assert torch.equal(got.ray_id, torch.arange(n)[:, None].expand(n, 200)[ok])
    assert torch.allclose(got.t, t[ok], atol=1e-5)
    assert torch.equal(got.counts, ok.sum(1))
    assert got.ray_id.numel() > 0 and not (got.ray_id == 0).any()


# ---- the field ------------------------------------------------------------------------------
def _random_field() -> GridTeacherField:
    torch.manual_seed(0)
    field = GridTeacherField(torch.tensor([-1.0, -0.5, -0.8]), torch.tensor([1.0, 0.5, 0.8]), 12, 8,
                             feature_dim=6, hidden=16, sigma_init=0.5, density_scale=5.0)
    with torch.no_grad():
        field.density_grid.normal_(0.0, 3.0)
        field.feature_grid.normal_(0.0, 2.0)
        for p in field.mlp.parameters():
            p.normal_(0.0, 0.5)
    return field


def test_field_interface_and_state_round_trip() -> None:
    field = _random_field()
    pts = torch.rand(500, 3) * 4 - 2  # many outside the box
    dirs = F.normalize(torch.randn(500, 3), dim=-1)
    sigma, rgb = field(pts, dirs)
    assert sigma.shape == (500,) and rgb.shape == (500, 3)
    assert (sigma >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()
    outside = ((pts < field.box_min) | (pts > field.box_max)).any(-1)
    assert outside.any() and (~outside).any()
    assert (sigma[outside] == 0).all() and (sigma[~outside] > 0).all()
    assert torch.equal(field.density(pts), sigma)
    ray_dirs, ray_index = dirs[:50], torch.arange(500) % 50  # per-ray directions, shared by samples
    assert torch.allclose(field.color(pts, ray_dirs, ray_index), field.color(pts, ray_dirs[ray_index]), atol=1e-6)
    h = torch.cat([torch.zeros(500, field.feature_dim), positional_encoding(dirs, 4)], -1)
    with torch.no_grad():  # the split first layer is the plain MLP on [features, PE(dir)]
        field.feature_grid.zero_()
    assert torch.allclose(field.color(pts, dirs), torch.sigmoid(field.mlp(h)), atol=1e-6)
    rebuilt = GridTeacherField.from_state_dict(field.state_dict())
    s2, c2 = rebuilt(pts, dirs)
    assert torch.equal(s2, sigma) and torch.equal(c2, field.color(pts, dirs))


def test_occupancy_skips_only_cells_below_threshold() -> None:
    field = _random_field()
    thr = 2.0
    frac = field.update_occupancy(thr)
    assert 0.0 < frac < 1.0
    pts = field.box_min + torch.rand(20000, 3) * (field.box_max - field.box_min)
    cells = torch.tensor(field.density_res) - 1
    c = torch.minimum(((pts - field.box_min) / (field.box_max - field.box_min) * cells).floor().long(), cells - 1)
    empty = ~field.occupancy[c[:, 2], c[:, 1], c[:, 0]]
    assert empty.any()
    assert (field.density(pts)[empty] <= thr + 1e-4).all()


# ---- training on a tiny scene ---------------------------------------------------------------
def _sphere_scene(size: int = 24, n_views: int = 10, white: bool = False) -> Scene:
    """A sphere of radius 0.6 at the origin, coloured by its normal (or ``white``, with the
    photos' alpha kept), on white; rays traced here."""
    focal = 0.5 * size / math.tan(0.35)
    intr = np.array([focal, focal, size / 2, size / 2])
    poses, images, alphas = [], [], []
    for k in range(n_views):
        az, el = 2 * math.pi * k / n_views, 0.3 + 0.4 * (k % 3) / 2
        eye = 3.0 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        pose = look_at(eye)
        o, d = camera_rays(torch.as_tensor(pose, dtype=torch.float64), torch.as_tensor(intr), pixel_coords(size, size).double())
        b = (o * d).sum(-1)
        disc = b * b - (o * o).sum(-1) + 0.36
        t = -b - torch.sqrt(disc.clamp_min(0))
        normal = F.normalize(o + t[:, None] * d, dim=-1)
        colour = torch.ones_like(normal) if white else 0.5 + 0.45 * normal
        rgb = torch.where((disc > 0)[:, None], colour, torch.ones(1, dtype=torch.float64))
        images.append((rgb.view(size, size, 3).numpy() * 255).round().astype(np.uint8))
        alphas.append(np.where((disc > 0).view(size, size).numpy(), 255, 0).astype(np.uint8))
        poses.append(pose)
    n = len(images)
    return Scene(images=images, intrinsics=np.tile(intr, (n, 1)), poses=np.stack(poses),
                 splits={"train": np.arange(n - 2), "val": np.arange(n - 2, n)},
                 bbox=np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), near=1.0, far=5.0,
                 alphas=alphas if white else None)


TINY = FastTeacherConfig(total_steps=200, rays_per_step=256, coarse_res=16, coarse_rays=256,
                         res_schedule=((60, 20, 16), (120, 28, 20)), feature_dim=6, hidden=16, lr_grid=0.3,
                         occupancy_every=20, eval_chunk_rays=512)


def _train(trainer: FastTeacherTrainer, table: RayTable, steps: range, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    losses = []
    for step in steps:
        o, d, rgb = table.sample(trainer.rays_per_step, g)
        losses.append(float(trainer.train_step(step, o, d, rgb)["loss"]))
    return losses


def test_training_improves_psnr_and_shrinks_the_box() -> None:
    scene = _sphere_scene()
    train, val = RayTable(scene, "train"), RayTable(scene, "val")
    trainer = FastTeacherTrainer(scene, TINY)

    def val_psnr() -> float:
        o, d, rgb = val.image(0)
        return float(-10 * torch.log10(((trainer.render_rays(o, d) - rgb) ** 2).mean()))

    before = val_psnr()
    _train(trainer, train, range(TINY.total_steps), seed=3)
    after = val_psnr()
    assert after > before + 8.0, (before, after)
    assert after > 20.0
    box = torch.stack([trainer.field.box_min, trainer.field.box_max])
    assert (box[0] > -1.0).all() and (box[1] < 1.0).all()  # shrunk from the scene box ...
    assert (box[0] < -0.6).all() and (box[1] > 0.6).all()  # ... but still holds the sphere
    assert trainer.field.density_res[0] == 28


@pytest.mark.parametrize("split_at", [3, 6, 13])  # in the coarse phase, at the box shrink, later
def test_resume_is_bit_identical(split_at: int) -> None:
    scene = _sphere_scene(size=16, n_views=6)
    table = RayTable(scene, "train")
    config = replace(TINY, total_steps=30, rays_per_step=128, coarse_rays=64, res_schedule=((6, 20, 16), (12, 28, 20)),
                     occupancy_every=4)
    a = FastTeacherTrainer(scene, config)
    _train(a, table, range(split_at), seed=4)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = FastTeacherTrainer(scene, config)
    b.load_state_dict(torch.load(buf, weights_only=True))
    la = _train(a, table, range(split_at, split_at + 6), seed=5)
    lb = _train(b, table, range(split_at, split_at + 6), seed=5)
    assert la == lb
    for (name, pa), pb in zip(a.field.state_dict().items(), b.field.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_random_background_targets() -> None:
    scene = _sphere_scene(size=8, n_views=4)
    trainer = FastTeacherTrainer(scene, replace(TINY, random_background=True))
    colour = torch.tensor([0.2, 0.5, 0.7])
    rgba = torch.tensor([[1.0, 1.0, 1.0, 0.0], [*colour.tolist(), 1.0], [*(0.5 * colour + 0.5).tolist(), 0.5]])
    rgba = rgba.repeat(20, 1)
    target, bg = trainer.targets(rgba)
    assert bg is not None and bg.shape == (60, 3) and bg.min() >= 0 and bg.max() <= 1 and bg.std() > 0.1
    torch.testing.assert_close(target[0::3], bg[0::3])  # fully transparent: the random colour
    torch.testing.assert_close(target[1::3], colour.expand(20, 3))  # opaque: unchanged
    torch.testing.assert_close(target[2::3], 0.5 * colour + 0.5 * bg[2::3])
    # Without alpha, or with the option off, the photos' own composite is the target.
    assert trainer.targets(rgba[:, :3])[1] is None
    plain, no_bg = FastTeacherTrainer(scene, TINY).targets(rgba)
    assert no_bg is None and torch.equal(plain, rgba[:, :3])
    # A training step takes RGBA rays.
    o, d, _ = RayTable(scene, "train").sample(TINY.rays_per_step, torch.Generator().manual_seed(0))
    assert math.isfinite(float(trainer.train_step(0, o, d, rgba[:1].expand(o.shape[0], 4))["loss"]))


def test_mask_loss_makes_a_background_coloured_object_opaque() -> None:
    """A white sphere on white: the photos alone cannot tell it from empty space (the sparsity
    loss then empties it); with ``mask_weight`` the photos' alpha makes it opaque."""
    scene = _sphere_scene(size=16, n_views=8, white=True)
    o, d, _ = RayTable(scene, "val").image(0)
    inside = torch.from_numpy(scene.alphas[int(scene.indices("val")[0])].reshape(-1) > 0)
    cfg = replace(TINY, total_steps=60, res_schedule=((1000, 20, 16),))
    opacity = {}
    for weight in (0.0, 1.0):
        trainer = FastTeacherTrainer(scene, replace(cfg, mask_weight=weight))
        assert trainer.uses_alpha == (weight > 0)
        table = RayTable(scene, "train", with_alpha=trainer.uses_alpha)
        _train(trainer, table, range(cfg.total_steps), seed=1)
        with torch.no_grad():
            acc = trainer.render(o, d, None).acc
        opacity[weight] = (float(acc[inside].mean()), float(acc[~inside].mean()))
    assert opacity[0.0][0] < 0.3, opacity
    assert opacity[1.0][0] > 0.7 and opacity[1.0][1] < 0.2, opacity


def test_coarse_phase_colours_every_sample() -> None:
    """At the start every sample's weight is below ``color_weight_threshold``; skipping their
    colour would render the object black whatever the grid says (which biased training with
    random backgrounds). In the coarse phase all samples are coloured, later the threshold holds."""
    scene = _sphere_scene(size=8, n_views=4)
    trainer = FastTeacherTrainer(scene, replace(TINY, alpha_init=1e-3, color_weight_threshold=2e-3))
    o, d, _ = RayTable(scene, "train").image(0)
    black = torch.zeros(3)
    with torch.no_grad():
        trainer.field.feature_grid[..., :3].fill_(10.0)  # diffuse colour sigmoid(10): white
        out = trainer.render(o, d, None, black)
    assert float(out.weights.max()) < 2e-3 and float(out.acc.max()) > 0.01
    torch.testing.assert_close(out.rgb, out.acc[:, None].expand(-1, 3) * torch.sigmoid(torch.tensor(10.0)))
    trainer.stage = 1  # past the coarse phase: faint samples are skipped (black) again
    with torch.no_grad():
        assert float(trainer.render(o, d, None, black).rgb.max()) == 0.0


def test_lattice_aspect_puts_fewer_nodes_along_depth() -> None:
    from kilonerf.fields.grid_teacher import lattice_shape

    lo, hi = torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    assert lattice_shape(lo, hi, 65) == (65, 33, 65)
    assert lattice_shape(lo, hi, 65, (1.0, 1.0, 4.0)) == (65, 33, 17)
