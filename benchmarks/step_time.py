"""Seconds per training step of one stage, resumed from a finished run, and the optimiser's share.

    python benchmarks/step_time.py RUN teacher|distill|finetune [--steps 10] [--rounds 3] [--at 2000]
        [--backend cpu|torch_ref] [--profile]

teacher: the trained teacher's checkpoint, stepped again from step ``--at`` (its grids at full
resolution); distill: a fresh student distilled from the run's teacher; finetune: the run's
distilled student. Prints the median over ``--rounds`` of ``--steps`` timed steps (after 3
warm-up steps) and the time inside ``optimizer.step``. To compare code versions, run the same
RUN with each on ``PYTHONPATH`` (a run whose teacher both versions can load). ``--backend``:
the student's training backend (default: the run's setting, or what the distilled student was
saved with). ``--profile``: then ``--steps`` more steps under ``torch.profiler``, printing the torch
operations with the most time of their own (by input shape, so a whole-grid fill shows as one
line; the compiled kernels, called through ctypes, are not torch operations and do not show).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

from kilonerf.data.rays import RayTable
from kilonerf.io import safe_torch_load
from kilonerf.kernels.perf import machine_name
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.run.pipeline import new_student, open_run, run_teacher
from kilonerf.runtime import reuse_freed_memory
from kilonerf.train.config.student import DistillConfig, FinetuneConfig
from kilonerf.train.distill import DistillTrainer
from kilonerf.train.finetune import FinetuneTrainer
from kilonerf.train.student_io import load_student
from kilonerf.train.teacher import make_teacher


def trainer_and_batches(run_dir: str, stage: str, backend: str | None = None) -> tuple[Any, Callable[[], tuple[torch.Tensor, ...]]]:
    run, cfg, scene = open_run(None, run_dir)
    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    if stage == "teacher":
        trainer = make_teacher(cfg.teacher, scene, cfg.teacher_params, dev)
        trainer.load_state_dict(safe_torch_load(run.stage_checkpoint("teacher"), map_location=dev)["trainable"])
        table = RayTable(scene, "train", device=dev, with_alpha=trainer.uses_alpha)
        return trainer, lambda: table.sample(trainer.rays_per_step, gen)
    occupancy = OccupancyGrid.load(run.occupancy_path)
    if stage == "distill":
        teacher = run_teacher(run, cfg, scene, dev)
        student = new_student(cfg, occupancy, dev)
        student.backend = backend or student.backend
        trainer = DistillTrainer(teacher.field, student, occupancy, DistillConfig.from_dict(cfg.distill), dev,
                                 scene=scene)  # fmt: skip
        empty = torch.zeros(0, 3)
        return trainer, lambda: (empty, empty, empty)
    config = FinetuneConfig.from_dict(cfg.finetune)
    student = load_student(run.distilled_path, dev)
    student.backend = backend or student.backend
    trainer = FinetuneTrainer(student, occupancy, scene, config, dev)
    table = RayTable(scene, "train", device=dev)
    return trainer, lambda: table.sample(config.rays_per_step, gen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("stage", choices=["teacher", "distill", "finetune"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--at", type=int, default=2000, help="teacher: the step number to continue from")
    ap.add_argument("--backend", choices=["cpu", "torch_ref"], help="the student's training backend")
    ap.add_argument("--profile", action="store_true", help="also profile --steps steps (torch.profiler)")
    args = ap.parse_args()
    reuse_freed_memory()  # as the kilonerf command does
    trainer, batch = trainer_and_batches(args.run, args.stage, args.backend)
    start = args.at if args.stage == "teacher" else 0
    inside = [0.0]

    def timed_step(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = step(*a, **k)
        inside[0] += time.perf_counter() - t
        return out

    step = trainer.optimizer.step
    trainer.optimizer.step = timed_step
    for i in range(3):
        trainer.train_step(start + i, *batch())
    totals, opt = [], []
    for _ in range(args.rounds):
        inside[0] = 0.0
        t0 = time.perf_counter()
        for i in range(args.steps):
            trainer.train_step(start + i, *batch())
        totals.append((time.perf_counter() - t0) / args.steps)
        opt.append(inside[0] / args.steps)
    backend = f" ({trainer.student.backend})" if args.stage != "teacher" else ""
    print(f"{args.stage}{backend} on {args.run}: {statistics.median(totals) * 1e3:.1f} ms a step "
          f"(rounds {', '.join(f'{t * 1e3:.1f}' for t in totals)}), optimiser step {statistics.median(opt) * 1e3:.1f} ms; "
          f"{machine_name()}")  # fmt: skip

    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            for i in range(args.steps):
                trainer.train_step(start + i, *batch())
        print(f"totals over {args.steps} profiled steps (divide by {args.steps} for a step):")
        table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15)
        print(table)


if __name__ == "__main__":
    main()
