"""Student quality and frame time against the samples per ray it renders with.

    python benchmarks/render_samples.py RUN [--samples 384,128,112,96] [--ert 0.01] [--views 3]
        [--samples-per-pass 8] [--json F]

Renders the first ``--views`` views of the run's test (else val) split at their own size with
the run's student through the fast renderer (compiled backend on the CPU), once per sample
count, after one untimed warm-up render, and prints PSNR, samples evaluated per ray and ms per
frame. Used to pick a scene type's ``finetune.render_samples`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kilonerf.bench import bench_split, scene_views
from kilonerf.io import atomic_write_json
from kilonerf.kernels.perf import machine_name
from kilonerf.metrics import psnr
from kilonerf.run.folder import RunDir
from kilonerf.run.models import load_run_scene, load_student_renderer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--samples", default="384,128,112,96")
    ap.add_argument("--ert", type=float, default=0.01)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--samples-per-pass", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    run = RunDir(Path(args.run))
    scene = load_run_scene(run)
    cpu = torch.device("cpu")
    views = scene_views(scene, args.views, None, cpu)
    targets = [torch.from_numpy(scene.images[i]).float() / 255.0 for i in scene.indices(bench_split(scene))[:args.views]]
    rows = []
    print(f"{args.run}: {len(views)} views of {views[0].width} x {views[0].height}, {machine_name(cpu)}")
    for count in (int(x) for x in args.samples.split(",")):
        renderer = load_student_renderer(run, scene, cpu, count)
        renderer.render_output(views[0].origins, views[0].dirs)  # warm-up: builds or loads the kernels
        seconds, evaluated, scores = 0.0, 0, []
        for view, target in zip(views, targets):
            t0 = time.perf_counter()
            out = renderer.render_output(view.origins, view.dirs, ert_threshold=args.ert,
                                         samples_per_pass=args.samples_per_pass)  # fmt: skip
            seconds += time.perf_counter() - t0
            evaluated += out.samples_evaluated
            scores.append(float(psnr(out.rgb.reshape(view.height, view.width, 3).clamp(0, 1), target)))
        rays = sum(v.origins.shape[0] for v in views)
        row = {"samples": count, "psnr": sum(scores) / len(scores), "samples_per_ray": evaluated / rays,
               "ms_per_frame": 1000.0 * seconds / len(views)}  # fmt: skip
        rows.append(row)
        print(f"{count:4d} samples: PSNR {row['psnr']:.3f} dB, {row['samples_per_ray']:.1f} samples/ray, "
              f"{row['ms_per_frame']:.1f} ms/frame", flush=True)  # fmt: skip
    if args.json:
        atomic_write_json(Path(args.json), {"run": args.run, "ert": args.ert, "machine": machine_name(cpu), "rows": rows})


if __name__ == "__main__":
    main()
