"""Stage 1: train the teacher radiance field (fast grid teacher or the paper's NeRF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kilonerf.data.rays import RayTable
from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.io import safe_torch_load
from kilonerf.names import TEACHERS
from kilonerf.train.fast_teacher import FastTeacherConfig, FastTeacherTrainer
from kilonerf.train.loop import LoopConfig, TrainingResult, run_training
from kilonerf.train.nerf_teacher import NeRFTeacherConfig, NeRFTeacherTrainer

Teacher = FastTeacherTrainer | NeRFTeacherTrainer


def make_teacher(kind: str, scene: Scene, params: dict[str, Any], device: torch.device) -> Teacher:
    """A fresh teacher trainer of ``kind`` (``fast`` or ``nerf``) from its config dict."""
    if kind == "fast":
        return FastTeacherTrainer(scene, FastTeacherConfig.from_dict(params), device)
    if kind == "nerf":
        return NeRFTeacherTrainer(scene, NeRFTeacherConfig.from_dict(params), device)
    raise RunError(f"unknown teacher '{kind}' (have: {', '.join(TEACHERS)})")


def train_teacher(
    ckpt: Path, scene: Scene, kind: str, params: dict[str, Any], loop: LoopConfig, device: torch.device
) -> TrainingResult:
    """Train (or resume) the teacher, checkpointing into ``ckpt``."""
    trainer = make_teacher(kind, scene, params, device)
    train_rays = RayTable(scene, "train", device=device, with_alpha=trainer.uses_alpha)
    val_rays = RayTable(scene, "val", device=device) if "val" in scene.splits else None
    return run_training(trainer, train_rays, val_rays, loop, ckpt, stage="teacher")


def load_teacher(path: Path, scene: Scene, kind: str, params: dict[str, Any], device: torch.device) -> Teacher:
    """The trained teacher from its checkpoint (weights only, no code is unpickled)."""
    ckpt = safe_torch_load(path, map_location=device)
    trainer = make_teacher(kind, scene, params, device)
    try:
        trainer.load_state_dict(ckpt["trainable"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise RunError(f"{path}: cannot load the {kind} teacher ({type(exc).__name__}: {exc})") from exc
    return trainer
