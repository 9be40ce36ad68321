"""The tiny MLPs' forward and backward for training: the compiled ``cpu`` backend against
``torch_ref`` on a distillation-like batch (every network the same number of points).

    python benchmarks/train_kernel_speed.py [--nets 1024] [--points 64] [--repeats 7] [--threads 2]

A timed pass is the backend's ``evaluate`` (forward) and ``torch.autograd.grad`` of a loss on
its outputs into the ten parameter tensors (backward; inputs get no gradient, as in training).
Medians over ``--repeats``. Random weights (cost does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kilonerf.kernels import get_backend
from kilonerf.kernels.base import MultiNetParams, layer_shapes
from kilonerf.kernels.perf import machine_name, tiny_mlp_flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", type=int, default=1024)
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    k, n = args.nets, args.nets * args.points
    weights = [(torch.randn(k, i, o, generator=gen) / i**0.5).requires_grad_() for i, o in layer_shapes()]
    biases = [(torch.randn(k, o, generator=gen) * 0.1).requires_grad_() for _, o in layer_shapes()]
    params = MultiNetParams(tuple(weights), tuple(biases))
    net = torch.arange(k).repeat_interleave(args.points)
    pos = torch.rand(n, 3, generator=gen) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    print(f"{k} networks x {args.points} points = {n} samples; {machine_name()}")
    for name in ("torch_ref", "cpu"):
        backend = get_backend(name)
        fwd, bwd = [], []
        for _ in range(args.repeats + 1):  # the first pass warms up (and builds the kernels)
            t0 = time.perf_counter()
            sigma, rgb = backend.evaluate(params, net, pos, dirs)
            t1 = time.perf_counter()
            torch.autograd.grad(sigma.square().sum() + rgb.square().sum(), [*weights, *biases])
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
        f, b = statistics.median(fwd[1:]), statistics.median(bwd[1:])
        gflops = 3 * tiny_mlp_flops() * n / (f + b) / 1e9
        print(f"{name:10s} forward {f * 1e3:7.1f} ms  backward {b * 1e3:7.1f} ms  both {(f + b) * 1e3:7.1f} ms  "
              f"(~{gflops:.0f} GFLOP/s counting a backward as two forwards)")


if __name__ == "__main__":
    main()
