"""Whole pipeline on a scene: stage times, teacher vs student quality, student render time.

    python benchmarks/pipeline.py ../shared/data/lego_100 --out runs/lego100 [--no-distill] [--json F]
        [--reuse-teacher RUN] [--scene-type auto|object|forward] [--set SECTION.NAME=VALUE ...]

Runs (or resumes) `kilonerf train` with the given preset, then evaluates teacher and student
on the val split and prints one table. Numbers depend on the machine: quote them with it.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from kilonerf.evaluation import evaluate_split, format_table
from kilonerf.io import atomic_write_json, read_json
from kilonerf.kernels.perf import machine_name
from kilonerf.run.models import load_renderer
from kilonerf.runtime import reuse_freed_memory
from kilonerf.run.pipeline import default_device, open_run, run_pipeline, stage_seconds
from kilonerf.run.folder import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--no-distill", action="store_true")
    ap.add_argument("--split", default="val")
    ap.add_argument("--scene-type", default="auto", help="auto, object, forward or unbounded (as `kilonerf train`)")
    ap.add_argument("--json")
    ap.add_argument("--reuse-teacher", metavar="RUN",
                    help="copy the teacher checkpoint and occupancy grid of another run of the same scene and preset "
                    "(e.g. for the --no-distill ablation, so both students share one teacher)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                    help="override one setting of a new run, as `kilonerf train --set`")
    args = ap.parse_args()
    reuse_freed_memory()  # as the kilonerf command does
    device = default_device()
    overrides = dict(item.split("=", 1) for item in args.set)
    run, cfg, scene = open_run(args.data, args.out, args.preset, None, args.no_distill, overrides, args.scene_type)
    if args.reuse_teacher:
        src = RunDir(Path(args.reuse_teacher))
        for path_of in (lambda r: r.stage_checkpoint("teacher"), lambda r: r.occupancy_path):
            if not path_of(run).exists():
                path_of(run).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.require(path_of(src), "teacher output", "teacher"), path_of(run))
        stages_path = run.stages_path
        if not stages_path.exists():
            # Only the copied stages' records: the source's distill/finetune times are not this run's.
            copied = read_json(src.stages_path)
            atomic_write_json(stages_path, {k: v for k, v in copied.items() if k in ("teacher", "occupancy")})
    t0 = time.perf_counter()
    run_pipeline(run, cfg, scene, device)
    wall = time.perf_counter() - t0
    rows = {}
    for model in ("teacher", "student"):
        render = load_renderer(run, model, scene, device)
        rows[model] = evaluate_split(render, scene, args.split, run.eval_dir(model, args.split), device)
    print(format_table(rows))
    times = stage_seconds(run)
    print(f"stage seconds: {times}  (total {sum(times.values()):.0f} s; this invocation {wall:.0f} s)")
    machine = machine_name(device)
    print(f"machine: {machine}")
    if args.json:
        atomic_write_json(args.json, {
            "machine": machine, "scene_type": scene.scene_type, "preset": args.preset, "no_distill": args.no_distill, "stage_seconds": times,
            **{m: {k: r[k] for k in ("psnr", "ssim", "ssim_skimage", "lpips", "ms_per_frame")} for m, r in rows.items()},
        })  # fmt: skip


if __name__ == "__main__":
    main()
