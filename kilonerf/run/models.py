"""Trained models of a run directory as render functions (rays -> colours)."""

from __future__ import annotations

from pathlib import Path

import torch

from kilonerf.data.load import load_scene
from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.names import MODELS, SCENE_TYPES
from kilonerf.render.volume import RenderFn
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.render.student import StudentRenderer
from kilonerf.run.folder import RunDir
from kilonerf.train.student_io import load_student
from kilonerf.train.config import PipelineConfig
from kilonerf.train.teacher import TeacherRenderer, load_teacher



def available_models(run: RunDir) -> list[str]:
    """Models whose files exist in the run, student first (it needs its occupancy grid too)."""
    have = []
    if run.student_path.is_file() and run.occupancy_path.is_file():
        have.append("student")
    if run.stage_checkpoint("teacher").is_file():
        have.append("teacher")
    return have


def default_model(run: RunDir) -> str:
    """The student once it can render, else the teacher (whose absence the loader reports)."""
    return (available_models(run) or ["teacher"])[0]


def load_renderer(
    run: RunDir, model: str, scene: Scene, device: torch.device, num_samples: int | None = None,
    chunk_rays: int = 1 << 14, backend: str | None = None,
) -> RenderFn:
    """A render function for ``model`` (``teacher`` or ``student``) of the run.

    The student renders with the fast renderer (empty-space skipping, early termination),
    ``num_samples`` uniform steps from the scene's near to far as in the paper (None: the run's
    ``finetune.render_samples``, see :func:`render_samples`), its tiny MLPs
    evaluated by ``backend`` (default: the compiled ``cpu`` backend on the CPU, see
    :func:`kilonerf.kernels.default_render_backend`; ``torch_ref`` forces the reference).
    """
    cfg = run.read_config()
    if model == "teacher":
        return run_teacher(run, cfg, scene, device).render_rays
    if model == "student":
        samples = render_samples(cfg) if num_samples is None else num_samples
        return load_student_renderer(run, scene, device, samples, chunk_rays, backend).render
    raise RunError(f"unknown model '{model}' (have: {', '.join(MODELS)})")


def run_teacher(run: RunDir, cfg: PipelineConfig, scene: Scene, device: torch.device) -> TeacherRenderer:
    """The run's trained teacher, its field ready to render (RunError naming the stage to run
    when it is missing); no optimiser is built."""
    path = run.require(run.stage_checkpoint("teacher"), "teacher checkpoint", "teacher")
    return load_teacher(path, scene, cfg.teacher, cfg.teacher_params, device)


def render_samples(cfg: PipelineConfig) -> int:
    """Samples per ray a run's student renders with: its ``finetune.render_samples`` (the
    validation renders during fine-tuning used the same; 384 unless the scene type or ``--set``
    chose another)."""
    return int(cfg.finetune["render_samples"])


def load_student_renderer(
    run: RunDir, scene: Scene, device: torch.device, num_samples: int | None = None, chunk_rays: int = 1 << 14,
    backend: str | None = None,
) -> StudentRenderer:
    """The fine-tuned student with its occupancy grid, as a :class:`StudentRenderer` (whose
    ``render_with_stats`` exposes the fast renderer's thresholds and sample counts).
    ``num_samples``: per ray (None: :func:`render_samples`). ``backend``: grouped-evaluation
    backend (default: the fastest available on ``device``)."""
    num_samples = render_samples(run.read_config()) if num_samples is None else num_samples
    student = load_student(run.require(run.student_path, "fine-tuned student", "finetune"), device)
    occupancy = OccupancyGrid.load(run.require(run.occupancy_path, "occupancy grid", "occupancy")).to(device)
    return StudentRenderer(student, occupancy, scene, num_samples, chunk_rays, backend)


def run_scene_path(run: RunDir) -> Path:
    return Path(run.read_meta()["data"])


def run_scene_type(run: RunDir) -> str:
    """The scene type the run was trained with (runs made before scene types: ``object``)."""
    kind = run.read_meta().get("scene_type", "object")
    if kind not in SCENE_TYPES:
        raise RunError(f"{run.meta_path}: unknown scene_type {kind!r} (have: {', '.join(SCENE_TYPES)})")
    return kind


def load_run_scene(run: RunDir, data: str | Path | None = None, splits: list[str] | None = None) -> Scene:
    """The run's scene (or the same scene from ``data``), in the scene type and at the image
    size it was trained with."""
    meta = run.read_meta()
    size = {k: meta.get(k) for k in ("downscale", "max_size")}
    for key, value in size.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1):
            raise RunError(f"{run.meta_path}: '{key}' must be a number >= 1, got {value!r}")
    return load_scene(data if data is not None else run_scene_path(run), splits=splits, scene_type=run_scene_type(run),
                      **size)  # fmt: skip
