"""The four stages chained over one run directory, each resumable and re-runnable alone."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kilonerf.data.load import load_scene
from kilonerf.data.rays import RayTable
from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.fields.network_grid import grid_resolution
from kilonerf.fields.multinet import MultiNetField
from kilonerf.io import atomic_write_json, check_output_parent, read_json, remove_stale_temps, safe_torch_load
from kilonerf.kernels import default_render_backend
from kilonerf.names import STAGES
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.train.config import DistillConfig, FinetuneConfig, PipelineConfig, resolve_config, scene_type_settings
from kilonerf.train.distill import DistillTrainer
from kilonerf.train.distributed import SINGLE, DataParallel, Group
from kilonerf.train.finetune import FinetuneTrainer
from kilonerf.train.loop import TrainingResult, run_training
from kilonerf.train.occupancy import build_student_occupancy
from kilonerf.run.folder import RunDir
from kilonerf.train.student_io import load_student, save_student
from kilonerf.run.models import load_run_scene, run_scene_type, run_teacher
from kilonerf.train.teacher import train_teacher


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


CPU_MAX_SIZE = 800
"""Longest image side the ``cpu`` preset trains on by default (pixels)."""


def open_run(
    data: str | Path | None,
    out: str | Path,
    preset: str | None = None,
    teacher: str | None = None,
    no_distill: bool = False,
    overrides: dict[str, str] | None = None,
    scene_type: str | None = None,
    downscale: float | None = None,
    max_size: int | None = None,
) -> tuple[RunDir, PipelineConfig, Scene]:
    """Create ``out`` as a new run (config resolved from the preset, ``overrides`` applied as
    ``--set`` does, every setting checked, then saved) or reopen an existing one (its saved
    config wins, checked the same way; conflicting options are an error). ``downscale`` and
    ``max_size`` shrink the photos (the ``cpu`` preset caps the longest side at
    :data:`CPU_MAX_SIZE` unless either is given)."""
    run = RunDir(Path(out))
    if run.root.exists() and not run.root.is_dir():
        raise RunError(f"{run.root}: is a file, not a run folder; choose another --out")
    if run.exists():
        cfg = run.read_config()
        for folder in (run.root, *(run.stage_checkpoint(s).parent for s in STAGES)):
            remove_stale_temps(folder)  # left by a kill during a write; never read
        for name, asked, have in (("preset", preset, cfg.preset), ("teacher", teacher, cfg.teacher)):
            if asked is not None and asked != have:
                raise RunError(f"{run.meta_path}: this run uses {name} '{have}', not '{asked}'; use a new --out")
        if no_distill and not cfg.no_distill:
            raise RunError(f"{run.meta_path}: this run was created with distillation; use a new --out for --no-distill")
        have = run_scene_type(run)
        if scene_type not in (None, "auto", have):
            raise RunError(f"{run.meta_path}: this run uses scene type '{have}', not '{scene_type}'; use a new --out")
        if downscale is not None or max_size is not None:
            raise RunError(f"{run.meta_path}: the image size of a run is fixed when it is created; use a new --out")
        scene = load_run_scene(run, data)
        return run, cfg, scene
    if data is None:
        raise RunError(f"{run.root}: no run here yet; give the scene folder to train on")
    cfg = new_config(preset or "cpu", teacher or "fast", no_distill, overrides)
    check_new_run_root(run, Path(data))
    capped = downscale is None and max_size is None and cfg.preset == "cpu"
    if capped:
        max_size = CPU_MAX_SIZE
    scene = load_scene(data, scene_type=scene_type or "auto", downscale=downscale, max_size=max_size)
    by_type = scene_type_settings(scene.scene_type, cfg.teacher, cfg.preset)
    if by_type:
        cfg = new_config(cfg.preset, cfg.teacher, no_distill, {**by_type, **(overrides or {})})
    if capped and scene.downscale > 1.0:
        h, w = scene.image_size(0)
        print(f"kilonerf: the cpu preset trains on images at most {CPU_MAX_SIZE} px on a side: {scene.downscale:.2f}x "
              f"smaller ({w}x{h}); --max-size or --downscale to choose", file=sys.stderr)
    run.write_meta({"data": str(Path(data).resolve()), "scene_type": scene.scene_type, "downscale": downscale,
                    "max_size": max_size, "config": cfg.to_dict()})  # fmt: skip
    return run, cfg, scene


def new_config(
    preset: str, teacher: str, no_distill: bool = False, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """A preset's configuration with ``SECTION.NAME`` -> value ``overrides`` (command-line
    strings or values) applied and every setting checked: SettingError before any work."""
    cfg = resolve_config(preset, teacher, no_distill=no_distill)
    for key, value in (overrides or {}).items():
        cfg.apply(key, value if isinstance(value, str) else json.dumps(value))
    cfg.validate()
    return cfg


def check_new_run_root(run: RunDir, data: Path) -> None:
    """A new run goes into a missing or empty folder; the only thing allowed there already is
    the scene it trains on (``kilonerf demo`` keeps the scene inside its run directory)."""
    if run.root.exists() and not run.root.is_dir():
        raise RunError(f"{run.root}: is a file, not a run folder; choose another --out")
    check_output_parent(run.root, "--out", create=True)
    inside = data.resolve()
    if run.root.exists() and any(p.resolve() != inside for p in run.root.iterdir()):
        raise RunError(f"{run.root}: exists, is not empty and is not a kilonerf run; choose another --out")


def stage_seconds(run: RunDir) -> dict[str, float]:
    """Seconds each finished stage took (from RUN/stages.json), rounded to 0.1 s."""
    path = run.stages_path
    stages = read_json(path) if path.is_file() else {}
    return {k: round(v.get("seconds", 0.0), 1) for k, v in stages.items()}


def _record(run: RunDir, stage: str, result: TrainingResult | None, extra: dict[str, Any]) -> None:
    """Append the stage's outcome to RUN/stages.json (for the report and the user)."""
    path = run.stages_path
    stages: dict[str, Any] = {}
    if path.is_file():
        stages = read_json(path)
    entry: dict[str, Any] = dict(extra)
    if result is not None:
        entry.update(steps=result.step, seconds=result.elapsed, wall=result.wall, val_psnr=result.last_val_psnr,
                     history=result.history)  # fmt: skip
    stages[stage] = entry
    atomic_write_json(path, stages)


def stage_done(run: RunDir, stage: str, cfg: PipelineConfig) -> bool:
    """Whether ``stage``'s final output is in the run directory."""
    if stage == "teacher":
        path = run.stage_checkpoint("teacher")
        if not path.is_file():
            return False
        return int(safe_torch_load(path)["step"]) >= int(cfg.teacher_loop["max_steps"])
    return {
        "occupancy": run.occupancy_path,
        "distill": run.distilled_path,
        "finetune": run.student_path,
    }[stage].is_file()


def run_stage(stage: str, run: RunDir, cfg: PipelineConfig, scene: Scene, device: torch.device,
              group: Group = SINGLE) -> None:  # fmt: skip
    """Run (or resume) one stage from its inputs in the run directory (with several ranks,
    ``group``: every rank calls this; rank 0 alone writes, then all wait for it)."""
    _run_stage(stage, run, cfg, scene, device, group)
    group.barrier()  # what rank 0 wrote is there before any rank reads it


def _run_stage(stage: str, run: RunDir, cfg: PipelineConfig, scene: Scene, device: torch.device, group: Group) -> None:
    main = group.is_main
    if stage == "teacher":
        result = train_teacher(run.stage_checkpoint("teacher"), scene, cfg.teacher, cfg.teacher_params,
                               cfg.loop("teacher"), device, group)  # fmt: skip
        if main:
            _record(run, "teacher", result, {"kind": cfg.teacher})
        return
    if stage == "occupancy":
        t0 = time.perf_counter()
        teacher = run_teacher(run, cfg, scene, device)
        grid = build_student_occupancy(teacher.field, scene, cfg.occupancy_config(), cfg.student_config(), device,
                                       group)  # fmt: skip
        if not main:
            return
        grid.save(run.occupancy_path)
        _record(run, "occupancy", None, {
            "seconds": time.perf_counter() - t0, "resolution": list(grid.res), "bbox": grid.bbox.tolist(),
            "occupied_fraction": grid.occupied_fraction,
        })  # fmt: skip
        return
    occupancy = OccupancyGrid.load(run.require(run.occupancy_path, "occupancy grid", "occupancy")).to(device)
    if stage == "distill":
        teacher = run_teacher(run, cfg, scene, device)
        student = new_student(cfg, occupancy, device)
        trainer = DistillTrainer(teacher.field, student, occupancy, DistillConfig.from_dict(cfg.distill), device,
                                 scene=scene, group=group)  # fmt: skip
        val = RayTable(scene, "val", device=device) if "val" in scene.splits else None
        result = run_training(trainer, None, val, cfg.loop("distill"), run.stage_checkpoint("distill"), stage="distill",
                              group=group)  # fmt: skip
        if not main:
            return
        save_student(run.distilled_path, trainer.student)
        _record(run, "distill", result, {"heldout": trainer.heldout_metrics()})
        return
    if stage == "finetune":
        if cfg.no_distill:
            student = new_student(cfg, occupancy, device)
        else:
            student = load_student(run.require(run.distilled_path, "distilled student", "distill"), device)
        trainer = FinetuneTrainer(student, occupancy, scene, FinetuneConfig.from_dict(cfg.finetune), device)
        train = RayTable(scene, "train", device=device)
        val = RayTable(scene, "val", device=device) if "val" in scene.splits else None
        trainable = data_parallel_student(trainer, group)
        result = run_training(trainable, train, val, cfg.loop("finetune"), run.stage_checkpoint("finetune"),
                              stage="finetune", group=group)  # fmt: skip
        if not main:
            return
        save_student(run.student_path, trainer.student)
        _record(run, "finetune", result, {"from_scratch": cfg.no_distill})
        return
    raise RunError(f"unknown stage '{stage}' (have: {', '.join(STAGES)})")


def data_parallel_student(trainer: FinetuneTrainer, group: Group) -> FinetuneTrainer | DataParallel:
    """Fine-tuning over ``group``'s ranks: data-parallel, only the networks that received
    samples (and the L2 penalty's rows, kept locally) in the gradient all-reduce."""
    if not group.active:
        return trainer
    student = trainer.student
    return DataParallel(trainer, group, rows=student.num_networks, penalised=list(student.view_dependent_parameters()))


def new_student(cfg: PipelineConfig, occupancy: OccupancyGrid, device: torch.device) -> MultiNetField:
    """A freshly initialised student on the occupancy grid's box (the paper's shared init)."""
    s = cfg.student_config()
    res = grid_resolution(occupancy.bbox.cpu(), s.max_res, s.cell_aspect)
    backend = default_render_backend(device) if s.backend == "auto" else s.backend
    return MultiNetField(occupancy.bbox.cpu(), res=res, hidden=s.hidden, shared_init=s.shared_init,
                         seed=cfg.seed, backend=backend).to(device)  # fmt: skip


def run_pipeline(
    run: RunDir, cfg: PipelineConfig, scene: Scene, device: torch.device, stages: Sequence[str] | None = None,
    group: Group = SINGLE,
) -> None:
    """Run the given stages (default: all, skipping those already finished); with several
    ranks (``group``) every rank calls this and rank 0 alone prints and writes."""
    say = print if group.is_main else (lambda *_: None)
    selected = list(stages) if stages else [s for s in STAGES if not (cfg.no_distill and s == "distill")]
    for stage in selected:
        if stage not in STAGES:
            raise RunError(f"unknown stage '{stage}' (have: {', '.join(STAGES)})")
        if not stages and stage_done(run, stage, cfg):
            say(f"[{stage}] already done, skipping")
            continue
        if stages and stage != "teacher" and stage_done(run, stage, cfg):
            # Explicitly re-running a finished stage starts it over.
            group.barrier()  # every rank has seen the stage done before rank 0 removes its checkpoint
            ckpt = run.stage_checkpoint(stage)
            if ckpt.is_file() and group.is_main:
                ckpt.unlink()
            group.barrier()
        say(f"[{stage}] running")
        run_stage(stage, run, cfg, scene, device, group)
