"""Validation PSNR of the fast grid teacher against training wall time.

A minimal driver: ``RayTable.sample`` -> ``FastTeacherTrainer.train_step``, evaluating the
whole val split (mean of per-image PSNR) when training time passes each ``--eval-at`` mark.
The clock is paused while evaluating, so the times are training time only.

    python benchmarks/teacher_curve.py --scene ../shared/data/lego_100 --eval-at 2,4,6,8,10
    python benchmarks/teacher_curve.py --set total_steps=3000 --set rays_per_step=2048 --json out.json
"""

from __future__ import annotations

import argparse
import ast
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from kilonerf.data.load import load_scene
from kilonerf.data.rays import RayTable
from kilonerf.io import atomic_torch_save, atomic_write_json
from kilonerf.train.fast_teacher import FastTeacherTrainer
from kilonerf.train.config import FastTeacherConfig

DEFAULT_SCENE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lego_100"


def evaluate(trainer: FastTeacherTrainer, table: RayTable, views: int) -> float:
    """Mean per-image PSNR over ``views`` images of ``table`` spread evenly (all when 0)."""
    n = table.num_images if views <= 0 else min(views, table.num_images)
    psnrs = []
    for k in torch.linspace(0, table.num_images - 1, n).round().long().tolist():
        origins, dirs, rgb = table.image(k)
        pred = trainer.render_rays(origins, dirs).clamp(0.0, 1.0)
        psnrs.append(float(-10.0 * torch.log10(torch.mean((pred - rgb) ** 2))))
    return sum(psnrs) / len(psnrs)


def parse_overrides(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = ast.literal_eval(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=DEFAULT_SCENE)
    ap.add_argument("--eval-at", default="2,4,6,8,10", help="training minutes at which to evaluate")
    ap.add_argument("--eval-steps", default="", help="evaluate after these step counts instead of at times")
    ap.add_argument("--val-views", type=int, default=0, help="val images per evaluation (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="FastTeacherConfig override")
    ap.add_argument("--log-every", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--save", type=Path, default=None, help="write the trainer's state_dict here at the end")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    config = replace(FastTeacherConfig(), **parse_overrides(args.set))
    by_step = bool(args.eval_steps)
    marks = ([float(m) for m in args.eval_steps.split(",") if m] if by_step
             else [float(m) * 60.0 for m in args.eval_at.split(",") if m])
    scene = load_scene(args.scene, splits=["train", "val"])
    trainer = FastTeacherTrainer(scene, config)
    train, val = RayTable(scene, "train", with_alpha=trainer.uses_alpha), RayTable(scene, "val")
    gen = torch.Generator().manual_seed(config.seed + 2)

    rows: list[dict[str, float]] = []
    elapsed, step, mark = 0.0, 0, 0
    print(f"config: {asdict(config)}", flush=True)
    while mark < len(marks) or step < config.total_steps:
        if step < config.total_steps:
            t0 = time.perf_counter()
            origins, dirs, rgb = train.sample(trainer.rays_per_step, gen)
            out = trainer.train_step(step, origins, dirs, rgb)
            elapsed += time.perf_counter() - t0
            step += 1
            if step % args.log_every == 0:
                f = trainer.field
                print(f"step {step:6d}  {elapsed:7.1f}s  train psnr {float(out['psnr']):6.2f}  "
                      f"samples/ray {float(out['samples_per_ray']):6.1f}  "
                      f"res {f.density_res}/{f.feature_res}  occ {float(f.occupancy.float().mean()):.3f}", flush=True)
        done = step >= config.total_steps
        if mark < len(marks) and ((step if by_step else elapsed) >= marks[mark] or done):
            t0 = time.perf_counter()
            psnr = evaluate(trainer, val, args.val_views)
            rows.append({"minutes": elapsed / 60.0, "step": step, "val_psnr": psnr,
                         "eval_seconds": time.perf_counter() - t0})
            print(f"== {elapsed / 60.0:5.2f} min  step {step:6d}  val PSNR {psnr:6.2f} dB "
                  f"(eval {rows[-1]['eval_seconds']:.0f}s)", flush=True)
            mark += 1
            if done:
                break

    f = trainer.field
    print("\n| train min | step | val PSNR (dB) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:.2f} | {r['step']} | {r['val_psnr']:.2f} |")
    print(f"box: {f.box_min.tolist()} .. {f.box_max.tolist()}")
    if args.save is not None:
        atomic_torch_save(args.save, trainer.state_dict())
    if args.json is not None:
        cfg = asdict(config)
        atomic_write_json(args.json, {"config": cfg, "rows": rows, "box": [f.box_min.tolist(), f.box_max.tolist()]})


if __name__ == "__main__":
    main()
