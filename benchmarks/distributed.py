"""Wall time of distillation and fine-tuning with 1 and 2 ranks (gloo, 1 thread each).

    python benchmarks/distributed.py --run /work/runs/lego_v15b --work runs/dist_bench \
        [--ranks 1 2] [--distill-steps 60] [--finetune-steps 40] [--json F]

``--run``: a finished run (teacher, occupancy and distilled student; read only: the files are
copied into ``--work``). Each rank count starts that many processes (torch.multiprocessing,
``init_from_env`` as under torchrun), each with one intra-op thread; every rank loads the
scene and the teacher, then the timed part: ``--distill-steps`` distillation steps from a
fresh student (networks sharded across ranks; the final gather timed apart), and
``--finetune-steps`` fine-tuning steps from the run's distilled student (data-parallel over
rays; every step all-reduces the gradients of the networks that received samples, or with
``--dense-allreduce`` of all networks). Reports the training seconds of rank 0 (the loop's
``elapsed``: validation and checkpoint writes excluded), the speed-up over 1 rank, the
all-reduce volume and time per fine-tuning step, how many networks received samples per step,
and whether the distilled networks are bit-identical to the 1-rank ones. Numbers depend on the
machine and on whatever else runs on it: quote them with both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from kilonerf.data.rays import RayTable
from kilonerf.kernels.perf import machine_name
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.run.folder import RunDir
from kilonerf.run.models import load_run_scene, run_teacher
from kilonerf.run.pipeline import data_parallel_student, new_student
from kilonerf.train.config import DistillConfig, FinetuneConfig, LoopConfig
from kilonerf.train.distill import DistillTrainer
from kilonerf.train.distributed import DataParallel, close, init_from_env
from kilonerf.train.finetune import FinetuneTrainer
from kilonerf.train.loop import run_training
from kilonerf.train.student_io import load_student


def copy_inputs(src: RunDir, dst: RunDir) -> None:
    """The run's config, teacher, occupancy grid and distilled student, copied (never modified)."""
    for path_of in (lambda r: r.meta_path, lambda r: r.stage_checkpoint("teacher"), lambda r: r.occupancy_path,
                    lambda r: r.distilled_path):  # fmt: skip
        target = path_of(dst)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src.require(path_of(src), path_of(src).name, "the source run"), target)


def rank_main(rank: int, world: int, port: int, work: str, distill_steps: int, finetune_steps: int, dense: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    device = torch.device("cpu")
    group, device = init_from_env(device)
    run = RunDir(Path(work))
    cfg = run.read_config()
    scene = load_run_scene(run)
    teacher = run_teacher(run, cfg, scene, device)
    occupancy = OccupancyGrid.load(run.occupancy_path).to(device)
    out = Path(work) / f"ranks{world}"
    out.mkdir(exist_ok=True)
    result: dict[str, Any] = {}

    # Distillation: networks sharded, no communication until the end.
    distill = DistillTrainer(teacher.field, new_student(cfg, occupancy, device), occupancy,
                             DistillConfig.from_dict(cfg.distill), device, scene=scene, group=group)  # fmt: skip
    loop = LoopConfig(max_steps=distill_steps, ckpt_every=10**9, log_every=max(1, distill_steps // 4), progress=False)
    (out / "distill.pt").unlink(missing_ok=True)
    group.barrier()
    t0 = time.perf_counter()
    res = run_training(distill, None, None, loop, out / "distill.pt", "distill", group=group)
    group.barrier()
    result["distill"] = {"elapsed": res.elapsed, "wall": time.perf_counter() - t0, "networks": int(distill.active.numel()),
                         "final_loss": res.history[-1].get("loss")}  # fmt: skip
    t1 = time.perf_counter()
    distill.gather_shards()
    result["distill"]["gather_seconds"] = time.perf_counter() - t1
    if group.is_main:
        torch.save({k: v.clone() for k, v in distill.student.state_dict().items()}, out / "distilled_weights.pt")
    del distill

    # Fine-tuning: data-parallel over rays, the whole gradient all-reduced every step.
    student = load_student(run.distilled_path, device)
    ft = FinetuneTrainer(student, occupancy, scene, FinetuneConfig.from_dict(cfg.finetune), device)
    trainable = data_parallel_student(ft, group) if not dense else DataParallel(ft, group)
    rays = RayTable(scene, "train", device=device)
    loop = LoopConfig(max_steps=finetune_steps, ckpt_every=10**9, log_every=max(1, finetune_steps // 4), progress=False)
    (out / "finetune.pt").unlink(missing_ok=True)
    group.barrier()
    t0 = time.perf_counter()
    res = run_training(trainable, rays, None, loop, out / "finetune.pt", "finetune", group=group)
    group.barrier()
    w0 = ft.student.weights[0].grad
    touched = int((w0.reshape(w0.shape[0], -1) != 0).any(1).sum()) if w0 is not None else -1
    params = sum(p.numel() for p in ft.student.parameters())
    result["finetune"] = {
        "elapsed": res.elapsed, "wall": time.perf_counter() - t0, "params": params,
        "networks": ft.student.num_networks, "networks_with_gradient_last_step": touched,
        "allreduce_values_per_step": getattr(trainable, "reduced_values", 0),
        "allreduce_seconds_per_step": getattr(trainable, "reduce_seconds", 0.0) / max(1, finetune_steps),
        "final_loss": res.history[-1].get("loss"),
    }  # fmt: skip
    if group.is_main:
        (out / "result.json").write_text(json.dumps(result, indent=2))
    close(group)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run to take the teacher, occupancy and student from")
    ap.add_argument("--work", required=True, help="scratch folder (the inputs are copied here)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--distill-steps", type=int, default=60)
    ap.add_argument("--finetune-steps", type=int, default=40)
    ap.add_argument("--dense-allreduce", action="store_true",
                    help="fine-tuning all-reduces every network's gradient (default: only the sampled networks')")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(args.work)
    copy_inputs(RunDir(Path(args.run)), RunDir(work))
    results: dict[int, dict[str, Any]] = {}
    for world in args.ranks:
        mp.start_processes(rank_main, args=(world, free_port(), str(work), args.distill_steps, args.finetune_steps,
                                            args.dense_allreduce),
                           nprocs=world, start_method="spawn")  # fmt: skip
        results[world] = json.loads((work / f"ranks{world}" / "result.json").read_text())
    base = results.get(1)
    print(f"machine: {machine_name()}; {args.distill_steps} distill steps, {args.finetune_steps} finetune steps, "
          "1 thread per rank")
    print(f"{'ranks':>5} {'distill s':>10} {'x':>6} {'gather s':>9} {'finetune s':>11} {'x':>6} "
          f"{'allreduce MB/step':>18} {'allreduce s/step':>17}")
    for world, r in results.items():
        d, f = r["distill"], r["finetune"]
        dx = base["distill"]["elapsed"] / d["elapsed"] if base else float("nan")
        fx = base["finetune"]["elapsed"] / f["elapsed"] if base else float("nan")
        mb = f["allreduce_values_per_step"] * 4 / 1e6
        print(f"{world:>5} {d['elapsed']:>10.2f} {dx:>6.2f} {d['gather_seconds']:>9.3f} {f['elapsed']:>11.2f} {fx:>6.2f} "
              f"{mb:>18.1f} {f['allreduce_seconds_per_step']:>17.3f}")
    if base:
        ref = torch.load(work / "ranks1" / "distilled_weights.pt", weights_only=True)
        for world in results:
            if world == 1:
                continue
            other = torch.load(work / f"ranks{world}" / "distilled_weights.pt", weights_only=True)
            same = all(torch.equal(ref[k].view(torch.int32) if ref[k].is_floating_point() else ref[k],
                                   other[k].view(torch.int32) if other[k].is_floating_point() else other[k]) for k in ref)
            results[world]["distill"]["bit_identical_to_1_rank"] = same
            print(f"distilled networks with {world} ranks bit-identical to 1 rank: {same}")
    f1 = next(iter(results.values()))["finetune"]
    print(f"fine-tuning: {f1['params']:,} parameters in {f1['networks']} networks; "
          f"{f1['networks_with_gradient_last_step']} networks got samples in the last step")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_name(), "args": vars(args),
                                               "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
