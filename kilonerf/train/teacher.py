"""Stage 1: train the teacher radiance field (fast grid teacher or the paper's NeRF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kilonerf.data.rays import RayTable
from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.fields.grid_teacher import GridTeacherField
from kilonerf.io import safe_torch_load
from kilonerf.names import TEACHERS
from kilonerf.render.dense import BoxRenderer
from kilonerf.render.grid_teacher import GridTeacherRenderer
from kilonerf.train.fast_teacher import FastTeacherTrainer
from kilonerf.train.config import FastTeacherConfig, LoopConfig, NeRFTeacherConfig
from kilonerf.train.distributed import SINGLE, DataParallel, Group
from kilonerf.train.loop import TrainingResult, run_training
from kilonerf.train.nerf_teacher import NeRFTeacherTrainer, nerf_field

Teacher = FastTeacherTrainer | NeRFTeacherTrainer


def make_teacher(kind: str, scene: Scene, params: dict[str, Any], device: torch.device) -> Teacher:
    """A fresh teacher trainer of ``kind`` (``fast`` or ``nerf``) from its config dict."""
    if kind == "fast":
        return FastTeacherTrainer(scene, FastTeacherConfig.from_dict(params), device)
    if kind == "nerf":
        return NeRFTeacherTrainer(scene, NeRFTeacherConfig.from_dict(params), device)
    raise RunError(f"unknown teacher '{kind}' (have: {', '.join(TEACHERS)})")


def train_teacher(
    ckpt: Path, scene: Scene, kind: str, params: dict[str, Any], loop: LoopConfig, device: torch.device,
    group: Group = SINGLE,
) -> TrainingResult:
    """Train (or resume) the teacher, checkpointing into ``ckpt``; with several ranks
    (``group``), data-parallel over each step's rays (:class:`DataParallel`)."""
    if group.active and kind == "fast":
        # The coarse phase trains on the first coarse_rays rays of each batch: each rank's
        # strided share holds 1/world of those.
        coarse = FastTeacherConfig.from_dict(params).coarse_rays
        params = {**params, "coarse_rays": -(-coarse // group.world)}
    trainer = make_teacher(kind, scene, params, device)
    train_rays = RayTable(scene, "train", device=device, with_alpha=trainer.uses_alpha)
    val_rays = RayTable(scene, "val", device=device) if "val" in scene.splits else None
    trainable = DataParallel(trainer, group) if group.active else trainer
    return run_training(trainable, train_rays, val_rays, loop, ckpt, stage="teacher", group=group)


TeacherRenderer = GridTeacherRenderer | BoxRenderer
"""A trained teacher for rendering: its ``field`` and ``render_rays`` (rays -> rgb)."""


def load_teacher(path: Path, scene: Scene, kind: str, params: dict[str, Any], device: torch.device) -> TeacherRenderer:
    """The trained teacher's field from its checkpoint, ready to render (weights only: no code
    is unpickled, and no trainer or optimiser is built)."""
    ckpt = safe_torch_load(path, map_location=device)
    background = torch.as_tensor(scene.background, dtype=torch.float32, device=device)
    try:
        state = ckpt["trainable"]
        if kind == "fast":
            c = FastTeacherConfig.from_dict(params, "teacher_params")
            field = GridTeacherField.from_state_dict(state["model"], c.dir_freqs).to(device)
            return GridTeacherRenderer(field, scene.near, scene.far, background, c.step_ratio, c.color_weight_threshold,
                                       c.eval_chunk_rays, coarse=int(state["stage"]) == 0,
                                       ray_map=scene.ray_map, ert_threshold=c.ert_threshold)  # fmt: skip
        if kind == "nerf":
            n = NeRFTeacherConfig.from_dict(params, "teacher_params")
            field = nerf_field(n, scene)
            field.load_state_dict(state["model"])
            field = field.to(device).eval()
            bbox = torch.as_tensor(scene.bbox, dtype=torch.float32, device=device)
            return BoxRenderer(field, bbox, background, n.num_samples, n.eval_chunk_points, scene.ray_map)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise RunError(f"{path}: cannot load the {kind} teacher ({type(exc).__name__}: {exc})") from exc
    raise RunError(f"unknown teacher '{kind}' (have: {', '.join(TEACHERS)})")
