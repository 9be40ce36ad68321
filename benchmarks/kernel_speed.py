"""Grouped tiny-MLP evaluation alone: samples/s and fraction of the machine's fp32 matmul rate.

    python benchmarks/kernel_speed.py [--run RUN] [--threads 2] [--json F]

Backends: the compiled ``cpu`` one in fp32 (``cpu``) and with each bf16 engine the CPU has
(``cpu-bf16-amx``, ``cpu-bf16-avx512``), and the pure-torch reference ``torch_ref`` (on the
smaller batches only: it is ~20x slower). Random weights (cost does not depend on them).

Sample spreads:

- ``render``: with ``--run``, the samples a real render evaluates: one val view of the run's
  scene at ``--view-res`` pixels, rendered by the run's student with empty-space skipping and
  early termination (the torch renderer, recording every pass), then re-assigned to a
  16^3-network grid over the scene's box (4096 networks for a cubic box: the paper's maximum).
  A batch of B samples is B consecutive recorded samples, as a renderer's pass buffer holds.
- ``uniform-K``: positions uniform in [-1, 1]^3, networks uniform over K of them.

The peak is a 2048^3 ``torch.mm`` with the same threads, measured (best of 3) right before
each row, so that a row and its yardstick see the same machine load; ``fraction`` =
samples/s x 12160 FLOP / that peak. The best peak of the run is printed too.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from kilonerf.fields.network_grid import NetworkGrid
from kilonerf.io import atomic_write_json
from kilonerf.kernels import GroupedBackend, MultiNetParams, get_backend
from kilonerf.kernels.base import layer_shapes
from kilonerf.kernels.perf import matmul_flops, tiny_mlp_flops


def random_params(num_nets: int, seed: int = 0) -> MultiNetParams:
    gen = torch.Generator().manual_seed(seed)
    ws = tuple(torch.randn((num_nets, i, o), generator=gen) / math.sqrt(i) for i, o in layer_shapes())
    bs = tuple(torch.randn((num_nets, o), generator=gen) * 0.1 for _, o in layer_shapes())
    return MultiNetParams(ws, bs)


def render_spread(run_path: Path, view_res: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """(net, local, dirs) of every sample one ESS + ERT render evaluates, on a 16^3 grid."""
    from kilonerf.bench import RecordingBackend, scene_views
    from kilonerf.data.load import load_scene
    from kilonerf.run.models import load_student_renderer, run_scene_path
    from kilonerf.render.fast import render_fast
    from kilonerf.run.folder import RunDir

    run = RunDir(run_path)
    scene = load_scene(run_scene_path(run))
    renderer = load_student_renderer(run, scene, torch.device("cpu"))
    student, occ = renderer.student, renderer.occupancy
    view = scene_views(scene, 1, view_res, "cpu")[0]
    rec = RecordingBackend(student, get_backend("cpu"))
    render_fast(student, occ, view.origins, view.dirs, scene.near, scene.far, 384, None, backend=rec)
    grid = NetworkGrid.from_bbox(torch.as_tensor(scene.bbox, dtype=torch.float32), 16)
    net, local = grid.locate(torch.cat(rec.points))
    keep = net >= 0
    return net[keep], local[keep], torch.cat(rec.dirs)[keep], grid.num_networks


def timed_backends() -> dict[str, GroupedBackend]:
    """Label -> backend: ``cpu`` (fp32), ``cpu-bf16-ENGINE`` for the bf16 engines the CPU runs, ``torch_ref``."""
    from kilonerf.kernels.cpu import CpuFusedBackend

    fp32 = CpuFusedBackend(precision="fp32")
    out: dict[str, GroupedBackend] = {"cpu": fp32}
    for engine in fp32.bf16_engines:
        out[f"cpu-{engine}"] = CpuFusedBackend(precision=engine)
    out["torch_ref"] = get_backend("torch_ref")
    return out


def time_backend(be: GroupedBackend, p: MultiNetParams, net: Tensor, pos: Tensor, d: Tensor, batch: int,
                 min_seconds: float = 0.5) -> float:  # fmt: skip
    """Samples/s of ``be`` over consecutive batches of ``batch`` samples (best of the rounds)."""
    n = net.shape[0]
    starts = list(range(0, max(n - batch, 0) + 1, batch)) or [0]
    best = 0.0
    spent, rounds = 0.0, 0
    while spent < min_seconds or rounds < 2:
        t0 = time.perf_counter()
        done = 0
        for lo in starts:
            s = slice(lo, lo + batch)
            be.evaluate(p, net[s], pos[s], d[s])
            done += net[s].shape[0]
        dt = time.perf_counter() - t0
        best = max(best, done / dt)
        spent += dt
        rounds += 1
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="run directory with a student (adds the 'render' spread)")
    ap.add_argument("--view-res", type=int, default=200, help="render width for the recorded spread (default 200)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batches", default="1000,10000,100000,1000000")
    ap.add_argument("--ref-max-batch", type=int, default=100000, help="largest batch timed with torch_ref")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    batches = [int(b) for b in args.batches.split(",")]
    peak = matmul_flops()
    gen = torch.Generator().manual_seed(1)
    spreads: dict[str, tuple[Tensor, Tensor, Tensor, int]] = {}
    if args.run is not None:
        spreads["render"] = render_spread(args.run, args.view_res)
    total = max(batches)
    for k in (64, 512, 4096):
        net = torch.randint(0, k, (total,), generator=gen)
        pos = torch.rand((total, 3), generator=gen) * 2 - 1
        d = torch.nn.functional.normalize(torch.randn((total, 3), generator=gen), dim=-1)
        spreads[f"uniform-{k}"] = (net, pos, d, k)
    rows = []
    timed = timed_backends()
    for name, (net, pos, d, k) in spreads.items():
        p = random_params(k)
        used = int(net.unique().numel())
        for backend, be in timed.items():
            for b in batches:
                if b > net.shape[0] or (backend == "torch_ref" and b > args.ref_max_batch):
                    continue
                row_peak = matmul_flops(repeats=3)
                rate = time_backend(be, p, net, pos, d, b)
                rows.append({"spread": name, "networks": k, "networks_used": used, "backend": backend, "batch": b,
                             "samples_per_s": rate, "peak_gflops": row_peak / 1e9,
                             "fraction": rate * tiny_mlp_flops() / row_peak})  # fmt: skip
                print(f"{name:>12} {k:5d} nets ({used:4d} used) {backend:>9} batch {b:8d}: {rate / 1e6:7.2f} M samples/s "
                      f"{rows[-1]['fraction'] * 100:5.1f}% of {row_peak / 1e9:.0f} GFLOP/s", flush=True)  # fmt: skip
    best_peak = max([peak] + [r["peak_gflops"] * 1e9 for r in rows])
    print(f"\nfp32 matmul peak (2048^3 torch.mm, {args.threads} threads): best {best_peak / 1e9:.1f} GFLOP/s; "
          f"{tiny_mlp_flops()} FLOP per sample\n")  # fmt: skip
    print("| spread | networks (used) | backend | batch | M samples/s | matmul GFLOP/s | fraction of peak |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['spread']} | {r['networks']} ({r['networks_used']}) | {r['backend']} | {r['batch']} | "
              f"{r['samples_per_s'] / 1e6:.2f} | {r['peak_gflops']:.0f} | {r['fraction'] * 100:.0f}% |")  # fmt: skip
    if args.json:
        atomic_write_json(args.json, {"peak_gflops": best_peak / 1e9, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
