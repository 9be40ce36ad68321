"""A run directory for viewer tests, written in a second: an untrained student made opaque
inside a sphere of occupied voxels, over a tiny procedural scene."""

from __future__ import annotations

from pathlib import Path

import torch

from kilonerf.data.procedural import write_procedural_scene
from kilonerf.fields.multinet import MultiNetField
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.run.pipeline import open_run
from kilonerf.train.student_io import save_student


TINY_TRAIN = [
    "--set", "teacher_params.total_steps=15", "--set", "teacher_loop.max_steps=15",
    "--set", "teacher_params.rays_per_step=256", "--set", "teacher_loop.val_views=1",
    "--set", "teacher_loop.ckpt_every=5",
    "--set", "occupancy.resolution_factor=2", "--set", "student.max_res=4", "--set", "occupancy.sigma_threshold=0",
    "--set", "distill_loop.max_steps=3", "--set", "distill_loop.val_views=0",
    "--set", "finetune_loop.max_steps=3", "--set", "finetune_loop.val_views=1",
    "--set", "finetune.rays_per_step=64", "--set", "finetune.num_samples=32", "--set", "finetune.render_samples=32",
    "--set", "distill.render_samples=32",
]  # fmt: skip
"""`kilonerf train` settings that run every stage in seconds (the result is poor, but real)."""



def write_sphere_run(root: Path, radius: float = 0.5) -> Path:
    """``root/run``: run.json, occupancy.npz (a ball of ``radius`` at the box centre) and
    student.pt (independent random networks, density biased up so the ball renders opaque
    in mid-grey colours on the scene's white background); no teacher."""
    scene_dir = write_procedural_scene(root / "scene", size=16, n_train=4, n_val=1, n_test=1)
    run, _, scene = open_run(scene_dir, root / "run")
    bbox = torch.tensor(scene.bbox, dtype=torch.float32)
    res = (16, 16, 16)
    axes = [torch.linspace(float(bbox[0, i]), float(bbox[1, i]), res[i] + 1) for i in range(3)]
    centres = torch.stack(torch.meshgrid(*[(a[:-1] + a[1:]) / 2 for a in axes], indexing="ij"), -1)
    ball = (centres - bbox.mean(0)).norm(dim=-1) < radius
    OccupancyGrid.from_dense(ball, bbox).save(run.occupancy_path)
    student = MultiNetField(bbox, max_res=4, shared_init=False, seed=1)
    with torch.no_grad():
        student.biases[2][:, 0] += 5.0  # raw density (column 0 of the third layer) well above 0
    save_student(run.student_path, student)
    return run.root
