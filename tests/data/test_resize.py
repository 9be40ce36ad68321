"""Downscaling photos for training: the factor, area filtering, intrinsics that keep every
pixel centre's ray, and a run that records its size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kilonerf.data.cameras import camera_rays, pixel_coords
from kilonerf.data.load import load_scene
from kilonerf.data.resize import downscale_scene, scale_factor
from kilonerf.data.scene import Scene
from kilonerf.run.models import load_run_scene
from kilonerf.run.pipeline import open_run
from tests.helpers.scenes import make_blender


def test_scale_factor() -> None:
    sizes = [(378, 504), (300, 400)]
    assert scale_factor(sizes) == 1.0
    assert scale_factor(sizes, downscale=2) == 2.0
    assert scale_factor(sizes, max_size=252) == 2.0
    assert scale_factor(sizes, downscale=3, max_size=252) == 3.0
    assert scale_factor(sizes, max_size=1000) == 1.0  # never upscales


def test_downscale_keeps_rays_and_averages_areas() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 18, 3), dtype=np.uint8)
    image[:6, :6] = 200  # a flat patch stays flat under an area filter
    alpha = np.full((12, 18), 255, np.uint8)
    pose = np.eye(4)
    pose[:3, 3] = (0.3, -0.2, 4.0)
    scene = Scene([image], np.array([[20.0, 21.0, 9.0, 6.0]]), pose[None], {"train": np.arange(1)},
                  np.array([[-1.0] * 3, [1.0] * 3]), 2.0, 6.0, alphas=[alpha])  # fmt: skip
    small = downscale_scene(scene, 3.0)
    assert small.images[0].shape == (4, 6, 3) and small.images[0].dtype == np.uint8
    assert small.alphas is not None and small.alphas[0].shape == (4, 6)
    assert (small.images[0][:2, :2] == 200).all() and small.downscale == 3.0
    np.testing.assert_allclose(small.images[0][2, 3], image[6:9, 9:12].reshape(-1, 3).mean(0), atol=0.51)
    # The centre of new pixel (i, j) sees what old position (3 i + 1.5, 3 j + 1.5) saw.
    new_px = pixel_coords(4, 6).double()
    o_new, d_new = camera_rays(torch.as_tensor(pose), torch.as_tensor(small.intrinsics[0]), new_px)
    o_old, d_old = camera_rays(torch.as_tensor(pose), torch.as_tensor(scene.intrinsics[0]), new_px * 3.0)
    torch.testing.assert_close(d_new, d_old)
    torch.testing.assert_close(o_new, o_old)
    assert downscale_scene(scene, 1.0) is scene


def test_a_run_records_its_image_size(tmp_path: Path) -> None:
    src = make_blender(tmp_path / "scene", size=(20, 30))
    full = load_scene(src)
    h, w = full.image_size(0)
    run, _, scene = open_run(src, tmp_path / "run", max_size=max(h, w) // 2)
    assert max(scene.image_size(0)) == max(h, w) // 2
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["max_size"] == max(h, w) // 2 and meta["downscale"] is None
    assert load_run_scene(run).image_size(0) == scene.image_size(0)
