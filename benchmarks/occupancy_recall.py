"""Occupancy grid from a trained teacher against the procedural scene's exact occupancy.

    python benchmarks/occupancy_recall.py --out runs/procedural [--json F]

Renders the built-in procedural scene (if ``OUT/scene`` is missing), trains the teacher and
builds the occupancy grid with `kilonerf train` (``cpu`` preset) in ``OUT/run``, then compares
the grid voxel by voxel with the truth: a voxel is truly occupied when any of the
``--truth-samples``^3 points of a lattice spanning it (corners included) lies inside an
object. Interior voxels of a closed solid are never seen by any camera, so the recall is also
given for the surface voxels alone (truly occupied voxels with an empty face neighbour), and
for the grid after the enclosed-space fill of the ``cpu`` preset.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from kilonerf.data.procedural import ProceduralScene, write_procedural_scene
from kilonerf.io import atomic_write_json
from kilonerf.render.occupancy import OccupancyGrid
from kilonerf.train.pipeline import default_device, open_run, run_pipeline


def surface_voxels(occupied: np.ndarray) -> np.ndarray:
    """Occupied voxels with at least one empty (or out-of-box) face neighbour."""
    padded = np.pad(occupied, 1, constant_values=False)
    all_full = np.ones_like(occupied)
    for axis in range(3):
        for shift in (-1, 1):
            all_full &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return occupied & ~all_full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--truth-samples", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    scene_dir = args.out / "scene"
    if not scene_dir.is_dir():
        write_procedural_scene(scene_dir, size=args.size)
    overrides = dict(item.split("=", 1) for item in args.set)
    device = default_device()
    run, cfg, scene = open_run(scene_dir, args.out / "run", "cpu", None, False, overrides)
    t0 = time.perf_counter()
    run_pipeline(run, cfg, scene, device, ["teacher", "occupancy"])
    seconds = time.perf_counter() - t0

    grid = OccupancyGrid.load(run.occupancy_path)
    marked = grid.to_dense().numpy()
    truth = ProceduralScene().voxel_occupancy(grid.bbox.numpy(), grid.res, args.truth_samples)
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
        "seconds_teacher_and_occupancy": round(seconds, 1),
    }
    for k, v in result.items():
        print(f"{k:>30}: {v}")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
