"""Scene types: the NDC map of forward-facing captures (straight rays, round trip, monotone
depth), detection from the cameras, and the rays renderers map through a scene's map."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kilonerf.data.cameras import camera_rays, look_at, pixel_coords
from kilonerf.data.scene import Scene
from dataclasses import replace

from kilonerf.data.scene_types import apply_scene_type, detect_scene_type, field_rays, ndc_map
from kilonerf.errors import SceneError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def forward_scene(n: int = 6, seed: int = 0) -> Scene:
    """Cameras on a small patch of a plane, all looking roughly down -z at a scene 2 to 8 away."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(n):
        eye = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3), rng.uniform(-0.05, 0.05)])
        target = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), -5.0])
        poses.append(look_at(eye, target, np.array([0.0, 1.0, 0.0])))
    h, w = 24, 32
    intr = np.tile([30.0, 30.0, w / 2, h / 2], (n, 1))
    images = [np.zeros((h, w, 3), np.uint8) for _ in range(n)]
    bbox = np.array([[-4.0, -3.0, -8.5], [4.0, 3.0, -1.5]])
    return Scene(images, intr, np.stack(poses), {"train": np.arange(n)}, bbox, 2.0, 8.0)


def orbit_scene(n: int = 8) -> Scene:
    poses = []
    for k in range(n):
        a = 2 * math.pi * k / n
        eye = np.array([4 * math.cos(a), 4 * math.sin(a), 1.0])
        poses.append(look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0])))
    intr = np.tile([20.0, 20.0, 8.0, 8.0], (n, 1))
    images = [np.zeros((16, 16, 3), np.uint8) for _ in range(n)]
    return Scene(images, intr, np.stack(poses), {"train": np.arange(n)}, np.array([[-1.0] * 3, [1.0] * 3]), 2.0, 6.0)


def test_ndc_rays_are_straight_and_depth_is_monotone() -> None:
    scene = forward_scene()
    mapping = ndc_map(scene)
    px = pixel_coords(24, 32)[::7].double()
    o, d = camera_rays(torch.as_tensor(scene.poses[2]), torch.as_tensor(scene.intrinsics[2]), px)
    o_n, d_n, length = mapping.ndc_rays(o, d)
    torch.testing.assert_close(d_n.norm(dim=1), torch.ones(len(px), dtype=torch.float64))
    torch.testing.assert_close(o_n[:, 2], -torch.ones(len(px), dtype=torch.float64))
    # World points along each ray (beyond the near plane) land on the NDC ray, in order.
    s = torch.linspace(2.0, 60.0, 25, dtype=torch.float64)
    pts = (o[:, None] + s[None, :, None] * d[:, None]).reshape(-1, 3)
    ndc = mapping.map_points(pts).reshape(len(px), len(s), 3)
    t = ((ndc - o_n[:, None]) * d_n[:, None]).sum(-1)
    torch.testing.assert_close(ndc, o_n[:, None] + t[..., None] * d_n[:, None], rtol=0, atol=1e-9)
    assert bool((t.diff(dim=1) > 0).all()) and bool((t < length[:, None]).all())
    # Infinity is at distance ``length`` (z' = 1).
    torch.testing.assert_close((o_n + length[:, None] * d_n)[:, 2], torch.ones(len(px), dtype=torch.float64))


def test_ndc_points_round_trip() -> None:
    mapping = ndc_map(forward_scene(seed=3))
    g = torch.Generator().manual_seed(0)
    ndc = torch.rand(200, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 2.0, 1.9]) - torch.tensor([1.0, 1.0, 1.0])
    torch.testing.assert_close(mapping.map_points(mapping.unmap_points(ndc)), ndc, rtol=0, atol=1e-9)


def test_forward_scene_maps_its_box_and_rays() -> None:
    scene = apply_scene_type(forward_scene())
    assert scene.scene_type == "forward" and scene.near == 0.0
    assert scene.bbox[0, 2] == -1.0 and scene.bbox[1, 2] == 1.0
    # Every pixel ray of every camera starts and ends inside the box, far covers it.
    for i in range(len(scene)):
        world = camera_rays(torch.as_tensor(scene.poses[i]), torch.as_tensor(scene.intrinsics[i]),
                            pixel_coords(24, 32).double())  # fmt: skip
        rays = field_rays(scene.ray_map, *world, scene.near, scene.far)
        o, d, length = rays.origins, rays.dirs, rays.far
        assert rays.pieces == 1 and bool((rays.near == 0).all())
        box = torch.as_tensor(scene.bbox)
        for p in (o, o + length[:, None] * d):
            assert bool(((p >= box[0] - 1e-9) & (p <= box[1] + 1e-9)).all())
        assert float(length.max()) <= scene.far
    assert scene.subset("train").ray_map is scene.ray_map
    # Every pixel sees a surface: the photos count as opaque (the teacher's mask loss uses it).
    assert scene.alphas is not None and all((a == 255).all() for a in scene.alphas)


def test_detection_and_forcing() -> None:
    assert detect_scene_type(forward_scene()) == "forward"
    orbit = orbit_scene()
    # Cameras all around and nothing else known: a 360° capture; a box given or alpha: an object.
    assert detect_scene_type(orbit) == "unbounded"
    assert detect_scene_type(replace(orbit, box_given=True)) == "object"
    with_alpha = replace(orbit, alphas=[np.full((16, 16), 255, np.uint8)] * len(orbit))
    assert detect_scene_type(with_alpha) == "object"
    assert apply_scene_type(with_alpha).ray_map is None
    assert apply_scene_type(forward_scene(), "object").scene_type == "object"
    assert apply_scene_type(forward_scene(), "unbounded").scene_type == "unbounded"
    with pytest.raises(SceneError, match="scene type 'forward' needs cameras that look one way.*unbounded or object"):
        apply_scene_type(orbit_scene(), "forward")
    with pytest.raises(SceneError, match="unknown scene type 'sphere'"):
        apply_scene_type(orbit_scene(), "sphere")


@pytest.mark.skipif(not (SHARED / "fern_llff").is_dir(), reason="needs ../shared/data")
def test_shared_scenes_are_detected() -> None:
    from kilonerf.data.load import load_scene

    assert load_scene(SHARED / "fern_llff", splits=["test"]).scene_type == "forward"
    assert load_scene(SHARED / "lego_100", splits=["val"]).scene_type == "object"


def test_scene_type_file_is_taken_by_auto(tmp_path: Path) -> None:
    from kilonerf.data.load import load_scene
    from tests.helpers.scenes import make_blender

    root = make_blender(tmp_path / "s")
    assert load_scene(root).scene_type == "object"  # alpha
    (root / "scene_type.txt").write_text("unbounded\n")
    assert load_scene(root).scene_type == "unbounded"
    assert load_scene(root, scene_type="object").scene_type == "object"  # forcing still wins
    (root / "scene_type.txt").write_text("sphere")
    with pytest.raises(SceneError, match="scene_type.txt: must hold one of object, forward, unbounded, got 'sphere'"):
        load_scene(root)
