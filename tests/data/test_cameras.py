"""Cameras and rays: pixel conventions, directions, ray/box intersection."""

from __future__ import annotations

import math
import subprocess
import sys

import torch

from kilonerf.data.cameras import camera_rays, pixel_coords, ray_box_intersect


def test_pixel_centres_and_corners() -> None:
    centres = pixel_coords(2, 3)
    corners = pixel_coords(2, 3, corner=True)
    assert centres.shape == (6, 2)
    assert torch.equal(centres[0], torch.tensor([0.5, 0.5]))
    assert torch.equal(centres[-1], torch.tensor([2.5, 1.5]))  # row-major: last is (x=2, y=1)
    assert torch.equal(corners[-1], torch.tensor([2.0, 1.0]))


def test_rays_of_identity_camera_follow_opengl_axes() -> None:
    pose = torch.eye(4)
    pose[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    intr = torch.tensor([10.0, 10.0, 5.0, 5.0])
    pixels = torch.tensor([[5.0, 5.0], [15.0, 5.0], [5.0, 15.0]])
    origins, dirs = camera_rays(pose, intr, pixels)
    assert torch.allclose(origins, torch.tensor([1.0, 2.0, 3.0]).expand(3, 3))
    assert torch.allclose(dirs[0], torch.tensor([0.0, 0.0, -1.0]))  # principal point looks along -z
    s = 1 / math.sqrt(2)
    assert torch.allclose(dirs[1], torch.tensor([s, 0.0, -s]))  # right in the image is +x
    assert torch.allclose(dirs[2], torch.tensor([0.0, -s, -s]))  # down in the image is -y
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(3))


def test_batched_poses_match_single_pose() -> None:
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen))
    pose = torch.eye(4)
    pose[:3, :3] = q
    pose[:3, 3] = torch.randn(3, generator=gen)
    intr = torch.tensor([50.0, 60.0, 16.0, 12.0])
    px = pixel_coords(24, 32)
    o1, d1 = camera_rays(pose, intr, px)
    o2, d2 = camera_rays(pose.expand(len(px), 4, 4), intr.expand(len(px), 4), px)
    assert torch.allclose(o1, o2) and torch.allclose(d1, d2, atol=1e-6)


def test_ray_box_intersection() -> None:
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [3.0, 3.0, 5.0], [0.0, 0.0, 5.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    near, far, hit = ray_box_intersect(origins, dirs, box)
    assert hit.tolist() == [True, True, False, False]
    assert torch.allclose(near[:2], torch.tensor([4.0, 0.0]))  # origin inside: near clamps to 0
    assert torch.allclose(far[:2], torch.tensor([6.0, 1.0]))


def test_console_script_help() -> None:
    for args in (["--help"], ["convert", "--help"]):
        out = subprocess.run([sys.executable, "-m", "kilonerf.cli", *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "usage: kilonerf" in out.stdout
