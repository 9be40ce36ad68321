"""The built-in procedural scene: exact tracing vs occupancy, shading, cameras, the writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kilonerf.data.cameras import camera_rays, pixel_coords
from kilonerf.data.procedural import (
    FLOOR, LEGO_CAMERA_ANGLE_X, ProceduralScene, camera_poses, look_at, spiral_poses, write_procedural_scene,
)
from kilonerf.data.procedural_shapes import Box, Cylinder, Sphere, rotation
from kilonerf.errors import SceneError

SMALL = dict(size=16, n_train=3, n_val=2, n_test=2)


@pytest.fixture(scope="module")
def scene() -> ProceduralScene:
    return ProceduralScene()


def _camera_rays(poses: np.ndarray, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    focal = 0.5 * size / np.tan(0.5 * LEGO_CAMERA_ANGLE_X)
    k = torch.tensor([focal, focal, size / 2, size / 2], dtype=torch.float64)
    pix = pixel_coords(size, size).double()
    rays = [camera_rays(torch.from_numpy(p), k, pix) for p in poses]
    return torch.cat([o for o, _ in rays]).numpy(), torch.cat([d for _, d in rays]).numpy()


def _march_first_inside(occupied: callable, o: np.ndarray, d: np.ndarray, t0: float, t1: float, step: float) -> np.ndarray:
    """Slow reference: t of the first occupied sample on a regular grid along each ray (inf if none)."""
    ts = np.arange(t0, t1, step)
    pts = o[:, None, :] + ts[None, :, None] * d[:, None, :]
    inside = occupied(pts.reshape(-1, 3)).reshape(len(o), len(ts))
    first = np.where(inside.any(1), ts[inside.argmax(1)], np.inf)
    return first


def test_trace_matches_ray_marching_reference(scene: ProceduralScene) -> None:
    o, d = _camera_rays(camera_poses(3, seed=5), size=12)
    depth = scene.trace(o, d)[2]
    step = 0.004
    first = _march_first_inside(scene.occupancy, o, d, 2.0, 6.0, step)
    hit = np.isfinite(depth)
    assert 0.1 < hit.mean() < 0.9
    # A traced miss is never entered by the march; a traced hit is found within one step,
    # except on rare grazing rays that cross less than one step of solid.
    assert not np.isfinite(first[~hit]).any()
    close = np.abs(first[hit] - depth[hit]) <= step + 1e-9
    assert close.mean() > 0.97
    assert (first[hit][~close] > depth[hit][~close]).all()


@pytest.mark.parametrize(
    "shape",
    [
        Sphere((0.1, -0.2, 0.3), 0.5),
        Box((0.2, 0.1, -0.1), (0.5, 0.3, 0.2), rotation(35.0, 20.0)),
        Cylinder((-0.1, 0.2, 0.0), 0.3, 0.45, rotation(-40.0, 60.0)),
    ],
)
def test_shape_intersection_against_marching_and_normals(shape) -> None:
    rng = np.random.default_rng(0)
    n = 400
    o = rng.normal(size=(n, 3))
    o = 3.0 * o / np.linalg.norm(o, axis=1, keepdims=True) + shape.centre
    d = shape.centre + rng.uniform(-0.7, 0.7, size=(n, 3)) - o
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t, normal = shape.intersect(o, d)
    step = 0.003
    first = _march_first_inside(shape.contains, o, d, 0.0, 6.0, step)
    hit = np.isfinite(t)
    assert 0.2 < hit.mean() < 0.95
    assert not np.isfinite(first[~hit]).any()
    assert (np.abs(first[hit] - t[hit]) <= step + 1e-9).mean() > 0.97
    p = o[hit] + t[hit, None] * d[hit]
    nh = normal[hit]
    np.testing.assert_allclose(np.linalg.norm(nh, axis=1), 1.0, atol=1e-9)
    assert (np.einsum("ij,ij->i", nh, d[hit]) < 0).all()  # rays from outside enter against the normal
    assert not shape.contains(p + 1e-5 * nh).any()
    assert shape.contains(p - 1e-5 * nh).all()


@pytest.mark.parametrize("k", range(6))
def test_object_bounds_are_tight(scene: ProceduralScene, k: int) -> None:
    shape = scene.objects[k].shape
    lo, hi = shape.bounds()
    n = 48
    axes = [np.linspace(lo[i], hi[i], n) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inside = grid[shape.contains(grid)]
    spacing = (hi - lo) / (n - 1)
    # Occupied grid points reach (within ~2 cells) every face of the box, and never leave it.
    np.testing.assert_array_less(inside.min(0) - lo, 2.5 * spacing)
    np.testing.assert_array_less(hi - inside.max(0), 2.5 * spacing)
    outside = lo - 0.01 + (hi - lo + 0.02) * np.random.default_rng(k).uniform(size=(20000, 3))
    outside = outside[np.any((outside < lo) | (outside > hi), axis=1)]
    assert not shape.contains(outside).any()


def test_occupancy_consistent_with_trace(scene: ProceduralScene) -> None:
    o, d = _camera_rays(camera_poses(4, seed=1))
    _, alpha, depth = scene.trace(o, d)
    hit = alpha > 0
    assert hit.sum() > 50
    before = o[hit] + (depth[hit] - 1e-6)[:, None] * d[hit]
    after = o[hit] + (depth[hit] + 1e-6)[:, None] * d[hit]
    assert not scene.occupancy(before).any()
    assert scene.occupancy(after).all()
    assert np.isinf(depth[~hit]).all() and (scene.trace(o[~hit], d[~hit])[0] == 1.0).all()


def test_occupancy_far_outside_and_fraction(scene: ProceduralScene) -> None:
    rng = np.random.default_rng(0)
    far = rng.uniform(-3, 3, size=(5000, 3))
    far = far[np.any(np.abs(far) > 1.2, axis=1)]
    assert not scene.occupancy(far).any()
    lo, hi = scene.bbox
    assert (lo >= -1.0).all() and (hi <= 1.0).all()
    inside_box = lo + (hi - lo) * rng.uniform(size=(20000, 3))
    frac = scene.occupancy(torch.from_numpy(inside_box)).mean()
    assert 0.01 < frac < 0.6


def test_render_view_has_background_and_objects(scene: ProceduralScene) -> None:
    size = 24
    focal = 0.5 * size / np.tan(0.5 * LEGO_CAMERA_ANGLE_X)
    img = scene.render_view(look_at(np.array([3.0, -2.0, 2.0])), (focal, focal, size / 2, size / 2), size, size)
    assert img.shape == (size, size, 4) and img.dtype == np.uint8
    alpha = img[..., 3]
    assert (alpha == 0).mean() > 0.1 and (alpha == 255).mean() > 0.1
    assert ((alpha > 0) & (alpha < 255)).any()  # anti-aliased edges have partial coverage
    assert (img[alpha == 0, :3] == 255).all()
    opaque = img[alpha == 255, :3].astype(int)
    assert (opaque.min(-1) < 200).mean() > 0.5  # most object pixels are clearly not white
    assert len({tuple(c // 32) for c in opaque}) > 8  # several distinct colours (textures)


def _look_at_point(scene: ProceduralScene, p: np.ndarray, views: np.ndarray, dist: float = 3.0) -> np.ndarray:
    rgb, alpha, depth = scene.trace(p + dist * views, -views)
    np.testing.assert_allclose(depth, dist, atol=1e-9)  # the point itself is what each ray sees
    assert (alpha == 1).all()
    return rgb


def test_glossy_colour_depends_on_view_but_diffuse_does_not(scene: ProceduralScene) -> None:
    sphere = scene.object("glossy_sphere").shape
    n0 = scene.light_dir
    p = sphere.centre + sphere.radius * n0
    tilted = rotation(0.0, 50.0) @ n0
    rgb = _look_at_point(scene, p, np.stack([n0, tilted]))
    # Facing the mirror direction adds a bright, whitish highlight to the red.
    assert (rgb[0] >= rgb[1]).all() and np.abs(rgb[0] - rgb[1]).max() > 0.5 and rgb[0].min() > 0.75

    q = np.array([0.8, 0.8, FLOOR])
    views = np.array([[0.0, 0.0, 1.0], [0.5, 0.5, 1.0], [-0.3, 0.6, 0.8]])
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    rgb = _look_at_point(scene, q, views)
    np.testing.assert_allclose(rgb, rgb[:1].repeat(3, 0), atol=1e-12)


def test_camera_poses_look_at_origin() -> None:
    for poses in (camera_poses(20, radius=4.0, seed=3), spiral_poses(10, radius=4.0, phase=0.3)):
        rot, pos = poses[:, :3, :3], poses[:, :3, 3]
        np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.eye(3)[None].repeat(len(poses), 0), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 4.0)
        assert (pos[:, 2] > 0).all()
        # -z of the camera points at the origin; +y is "up" (positive world z component).
        np.testing.assert_allclose(-rot[:, :, 2], -pos / 4.0, atol=1e-12)
        assert (rot[:, 2, 1] > 0).all()
    assert not np.allclose(camera_poses(5, seed=0), camera_poses(5, seed=1))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_is_deterministic_and_blender_shaped(tmp_path: Path) -> None:
    a = write_procedural_scene(tmp_path / "a", seed=0, **SMALL)
    b = write_procedural_scene(tmp_path / "b", seed=0, **SMALL)
    c = write_procedural_scene(tmp_path / "c", seed=1, **SMALL)
    assert _files(a) == _files(b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp folders left
    counts = {"train": 3, "val": 2, "test": 2}
    mats = {}
    for split, n in counts.items():
        meta = json.loads((a / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == LEGO_CAMERA_ANGLE_X
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{i}" for i in range(n)]
        mats[split] = np.array([f["transform_matrix"] for f in meta["frames"]])
        assert mats[split].shape == (n, 4, 4)
        assert len(list((a / split).glob("*.png"))) == n
        for i in range(n):
            with Image.open(a / split / f"r_{i}.png") as im:
                assert im.mode == "RGBA" and im.size == (16, 16)
        other = np.array([f["transform_matrix"] for f in json.loads((c / f"transforms_{split}.json").read_text())["frames"]])
        assert not np.allclose(mats[split], other)  # another seed, other cameras
    assert not np.allclose(mats["train"][:2], mats["val"])  # splits are different draws
    box = np.array([float(v) for v in (a / "bbox.txt").read_text().split()]).reshape(2, 3)
    tight = ProceduralScene().bbox
    assert (box[0] < tight[0]).all() and (box[1] > tight[1]).all() and (box[1] - box[0] < 2.5).all()
    near, far = (float(v) for v in (a / "near_and_far.txt").read_text().split())
    assert (near, far) == (2.0, 6.0)


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "scene"
    out.mkdir()  # an existing empty folder is fine
    write_procedural_scene(out, seed=0, size=8, n_train=1, n_val=1, n_test=1)
    before = _files(out)
    with pytest.raises(SceneError, match="not empty"):
        write_procedural_scene(out, seed=1, size=8, n_train=1, n_val=1, n_test=1)
    assert _files(out) == before
    write_procedural_scene(out, seed=1, size=8, n_train=2, n_val=1, n_test=1, overwrite=True)
    assert _files(out) != before and (out / "train" / "r_1.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_written_scene_loads(tmp_path: Path) -> None:
    load = pytest.importorskip("kilonerf.data.load")
    out = write_procedural_scene(tmp_path / "s", seed=0, **SMALL)
    loaded = load.load_scene(out)
    assert len(loaded) == 7 and loaded.images[0].shape == (16, 16, 3)
    assert loaded.scene_type == "object"  # photos with alpha (and a box)
    np.testing.assert_allclose(loaded.bbox, np.loadtxt(out / "bbox.txt").reshape(2, 3))
    assert (loaded.near, loaded.far) == (2.0, 6.0)
    # The loader composites onto white: it matches our own compositing of the PNG.
    rgba = np.asarray(Image.open(out / "train" / "r_0.png")).astype(np.float64) / 255.0
    expect = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    assert np.abs(loaded.images[loaded.indices("train")[0]] / 255.0 - expect).max() <= 1.5 / 255.0


def test_voxel_occupancy_matches_per_voxel_sampling() -> None:
    scene = ProceduralScene()
    bbox, res, s = scene.bbox + np.array([[-0.05], [0.05]]), (7, 6, 5), 3
    got = scene.voxel_occupancy(bbox, res, samples=s)
    size = (bbox[1] - bbox[0]) / np.array(res)
    want = np.zeros(res, dtype=bool)
    u = np.linspace(0.0, 1.0, s)
    offsets = np.stack(np.meshgrid(u, u, u, indexing="ij"), -1).reshape(-1, 3)
    for idx in np.ndindex(*res):  # the slow, obvious way: each voxel's own s^3 lattice
        want[idx] = scene.occupancy(bbox[0] + (np.array(idx) + offsets) * size).any()
    assert 0 < want.sum() < want.size
    assert np.array_equal(got, want)


def test_unbounded_kind_is_an_opaque_360_capture(tmp_path: Path) -> None:
    from kilonerf.data.load import load_scene
    from kilonerf.data.procedural import GROUND
    from kilonerf.data.procedural_environment import Environment

    out = write_procedural_scene(tmp_path / "u", seed=0, kind="unbounded", height=12, **SMALL)
    assert not (out / "bbox.txt").exists()
    with Image.open(out / "train" / "r_0.png") as im:
        assert im.mode == "RGB" and im.size == (16, 12)
    loaded = load_scene(out)
    assert loaded.scene_type == "unbounded" and loaded.images[0].shape == (12, 16, 3)
    # Every ray sees something: the ground (at its plane) below the horizon, the sky at infinity above.
    world = ProceduralScene(environment=Environment(GROUND))
    o = np.array([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])  # looking away from the objects
    d = np.array([[0.6, 0.0, -0.8], [0.6, 0.0, 0.8]])
    rgb, alpha, depth = world.trace(o, d)
    assert (alpha == 1).all() and np.isclose(depth[0], -GROUND / 0.8) and np.isinf(depth[1])
    assert not np.allclose(rgb[0], rgb[1]) and (rgb < 1).all()
    with pytest.raises(SceneError, match="unknown procedural scene kind 'room'"):
        write_procedural_scene(tmp_path / "r", kind="room", **SMALL)
