"""Per-view render time of a run's student on the pure-torch renderer (issue 4's 100 ms floor).

    python benchmarks/torch_render.py RUN [--views 20] [--repeats 3] [--threads 2] [--json F]

Renders the first ``--views`` val views of the run's scene at their own size through the fast
renderer (empty-space skipping, early termination at transmittance 0.01, 384 samples from
near to far) with the ``torch_ref`` backend, ``--repeats`` times, after one warm-up view. Per
view it keeps the best of the repeats (the machine's other load only ever adds time) and
prints the mean of those bests, the median and mean over all renders, samples evaluated per
view and the PSNR against the photos. Applies :func:`kilonerf.runtime.reuse_freed_memory`
as the ``kilonerf`` command does. ``--profile`` then renders the views once more under
``torch.profiler`` and prints the operators with the most self CPU time per view.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from kilonerf.data.load import load_scene
from kilonerf.data.rays import RayTable
from kilonerf.io import atomic_write_json
from kilonerf.kernels.perf import machine_name
from kilonerf.metrics.psnr import psnr
from kilonerf.run.models import load_student_renderer, run_scene_path
from kilonerf.runtime import reuse_freed_memory
from kilonerf.run.folder import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="torch_ref")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    reuse_freed_memory()
    torch.set_num_threads(args.threads)
    run = RunDir(args.run)
    scene = load_scene(run_scene_path(run))
    renderer = load_student_renderer(run, scene, torch.device("cpu"), backend=args.backend)
    table = RayTable(scene, "val")
    views = [table.image(k) for k in range(min(args.views, table.num_images))]
    renderer.render(views[0][0], views[0][1])  # warm-up
    times: list[list[float]] = [[] for _ in views]
    samples, psnrs = [], []
    for rep in range(args.repeats):
        for k, (origins, dirs, rgb) in enumerate(views):
            t0 = time.perf_counter()
            out, evaluated = renderer.render_with_stats(origins, dirs)
            times[k].append(time.perf_counter() - t0)
            if rep == 0:
                samples.append(evaluated)
                h, w = table.sizes[k]
                psnrs.append(psnr(out.clamp(0, 1).reshape(h, w, 3).numpy(), rgb.reshape(h, w, 3).numpy()))
    every = [t for ts in times for t in ts]
    result = {
        "machine": machine_name(),
        "threads": args.threads,
        "backend": args.backend,
        "views": len(views),
        "repeats": args.repeats,
        "ms_per_view_best_of_repeats": 1000 * statistics.mean(min(ts) for ts in times),
        "ms_per_view_median": 1000 * statistics.median(every),
        "ms_per_view_mean": 1000 * statistics.mean(every),
        "samples_per_view": statistics.mean(samples),
        "psnr": statistics.mean(psnrs),
    }
    for key, value in result.items():
        print(f"{key:>28}: {value:.2f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if args.json:
        atomic_write_json(args.json, result)
    if args.profile:
        with torch.profiler.profile() as prof:
            for origins, dirs, _ in views:
                renderer.render(origins, dirs)
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
        print("self CPU time per view (profiled render):")
        for e in ops:
            print(f"{e.key:>28}: {e.self_cpu_time_total / 1000 / len(views):7.1f} ms")


if __name__ == "__main__":
    main()
