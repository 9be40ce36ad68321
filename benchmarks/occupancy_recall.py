"""Occupancy grid from a trained teacher against the procedural scene's exact occupancy.

    python benchmarks/occupancy_recall.py --out runs/procedural [--json F] [--threads 1]
        [--set SECTION.NAME=VALUE ...] [--reuse-teacher runs/other]

Renders the built-in procedural scene (if ``OUT/scene`` is missing), trains the teacher and
builds the occupancy grid with `kilonerf train` (``cpu`` preset) in ``OUT/run``, then compares
the grid voxel by voxel with the truth: a voxel is truly occupied when any of the
``--truth-samples``^3 points of a lattice spanning it (corners included) lies inside an
object. Interior voxels of a closed solid are never seen by any camera, so the recall is also
given for the surface voxels alone (truly occupied voxels with an empty face neighbour).
The truth is counted over the grid's box (the student's); ``box_cuts_objects`` reports how far
the objects stick out of it per face (all zero: nothing truly occupied is left out).

``--reuse-teacher OTHER`` copies the trained teacher of an earlier ``--out OTHER`` (whose
teacher settings must be the same) to compare occupancy settings without retraining.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from kilonerf.data.procedural import FLOOR, ProceduralScene, write_procedural_scene
from kilonerf.errors import RunError
from kilonerf.io import atomic_write_json
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.train.config import FastTeacherConfig, NeRFTeacherConfig, PipelineConfig
from kilonerf.run.pipeline import default_device, open_run, run_pipeline, stage_seconds
from kilonerf.run.folder import RunDir


def surface_voxels(occupied: np.ndarray) -> np.ndarray:
    """Occupied voxels with at least one empty (or out-of-box) face neighbour."""
    padded = np.pad(occupied, 1, constant_values=False)
    all_full = np.ones_like(occupied)
    for axis in range(3):
        for shift in (-1, 1):
            all_full &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return occupied & ~all_full


def teacher_settings(cfg: PipelineConfig) -> tuple[object, ...]:
    """The teacher's kind, resolved config (defaults filled in) and loop settings."""
    params = (FastTeacherConfig if cfg.teacher == "fast" else NeRFTeacherConfig).from_dict(cfg.teacher_params)
    return cfg.teacher, params, cfg.teacher_loop


def reuse_teacher(other: Path, run: RunDir, cfg: PipelineConfig) -> None:
    """Copy the teacher checkpoint of the benchmark run under ``other`` into ``run``; its
    teacher settings must equal ``cfg``'s."""
    src = RunDir(other / "run")
    theirs = src.read_config()
    if teacher_settings(theirs) != teacher_settings(cfg):
        raise RunError(f"{src.meta_path}: its teacher settings differ from this run's; cannot reuse its teacher")
    dst = run.stage_checkpoint("teacher")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.stage_checkpoint("teacher"), dst)


def box_cuts(grid_box: np.ndarray, objects_box: np.ndarray) -> list[float]:
    """How far the objects' box sticks out of the grid's box past each face (xyz min, xyz max)."""
    return [round(float(v), 4) for v in np.concatenate([grid_box[0] - objects_box[0], objects_box[1] - grid_box[1]]).clip(0)]


def misses_by_height(missed: np.ndarray, grid: OccupancyGrid, platform: np.ndarray) -> dict[str, int]:
    """Missed voxels split by where their z-range lies: touching the platform's top face, in
    the slab below it, or above it (the objects standing on it)."""
    z0 = float(grid.bbox[0, 2]) + np.arange(grid.res[2]) * float(grid.voxel_size[2])
    z1 = z0 + float(grid.voxel_size[2])
    per_z = missed.sum(axis=(0, 1))
    top = (z0 <= FLOOR) & (z1 >= FLOOR)
    slab = (z1 < FLOOR) & (z1 >= platform[0, 2])
    return {"platform_top_layer": int(per_z[top].sum()), "platform_below_top": int(per_z[slab].sum()),
            "above_platform": int(per_z[z0 > FLOOR].sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--truth-samples", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--reuse-teacher", type=Path, metavar="OTHER", help="copy the teacher of --out OTHER")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    scene_dir = args.out / "scene"
    if not scene_dir.is_dir():
        write_procedural_scene(scene_dir, size=args.size)
    overrides = dict(item.split("=", 1) for item in args.set)
    device = default_device()
    run, cfg, scene = open_run(scene_dir, args.out / "run", "cpu", None, False, overrides)
    if args.reuse_teacher is not None and not run.stage_checkpoint("teacher").exists():
        reuse_teacher(args.reuse_teacher, run, cfg)
    t0 = time.perf_counter()
    run_pipeline(run, cfg, scene, device, ["teacher", "occupancy"])
    seconds = time.perf_counter() - t0

    grid = OccupancyGrid.load(run.occupancy_path)
    marked = grid.to_dense().numpy()
    procedural = ProceduralScene()
    truth = procedural.voxel_occupancy(grid.bbox.numpy(), grid.res, args.truth_samples)
    surface = surface_voxels(truth)
    n_true, n_marked = int(truth.sum()), int(marked.sum())
    result = {
        "resolution": list(grid.res),
        "true_occupied": n_true,
        "true_surface": int(surface.sum()),
        "marked": n_marked,
        "recall_all": float((marked & truth).sum() / max(1, n_true)),
        "recall_surface": float((marked & surface).sum() / max(1, int(surface.sum()))),
        "marked_over_true": n_marked / max(1, n_true),
        "box_cuts_objects": box_cuts(grid.bbox.numpy(), procedural.bbox),
        "misses": misses_by_height(truth & ~marked, grid, procedural.object("platform").shape.bounds()),
        "seconds_teacher_and_occupancy": round(seconds, 1),
        "seconds_occupancy": stage_seconds(run).get("occupancy"),
        "settings": {"teacher_params.random_background": cfg.teacher_params.get("random_background"),
                     "teacher_params.mask_weight": cfg.teacher_params.get("mask_weight"),
                     "occupancy.keep_unseen": cfg.occupancy.get("keep_unseen")},
    }
    for k, v in result.items():
        print(f"{k:>30}: {v}")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
