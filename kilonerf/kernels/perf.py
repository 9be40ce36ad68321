"""Yardsticks for kernel speed: the machine's fp32 matrix-product rate and FLOPs per sample."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from kilonerf.kernels.base import layer_shapes


def sync_device(device: torch.device | str) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so that wall-clock timings are honest."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def cpuinfo(prefix: str) -> str | None:
    """The first line of /proc/cpuinfo starting with ``prefix`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(prefix):
                return line
    except OSError:
        pass
    return None


def machine_name(device: torch.device | str = "cpu") -> str:
    """What timings ran on: the GPU's name, or the CPU model and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    line = cpuinfo("model name")
    cpu = line.split(":", 1)[1].strip() if line else (platform.processor() or platform.machine())
    return f"{cpu}, {torch.get_num_threads()} threads"


def matmul_flops(size: int = 2048, repeats: int = 7, device: torch.device | str = "cpu") -> float:
    """Best-of-``repeats`` fp32 rate (FLOP/s) of a ``size`` x ``size`` ``torch.mm`` with torch's
    current thread count: the machine's practical peak, measured in-process so that it sees
    the same load as the kernels it is compared with."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=gen, device=device)
    b = torch.randn(size, size, generator=gen, device=device)
    out = torch.empty(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up allocator and threads
        sync_device(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync_device(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def tiny_mlp_flops(hidden: int = 32, pos_freqs: int = 10, dir_freqs: int = 4) -> int:
    """Multiply-add FLOPs of one tiny-MLP sample (2 per weight): 12160 for the paper's net."""
    return 2 * sum(i * o for i, o in layer_shapes(hidden, pos_freqs, dir_freqs))


def nerf_mlp_flops(width: int = 256, depth: int = 8, skip: int = 4, dir_width: int = 128) -> int:
    """The same count for the paper's NeRF MLP (63 + 27 encoded inputs): about 1.19 M."""
    pe_pos, pe_dir = 63, 27
    trunk = [pe_pos] + [width + pe_pos if i == skip + 1 else width for i in range(1, depth)]
    weights = sum(d * width for d in trunk) + width + width * width + (width + pe_dir) * dir_width + dir_width * 3
    return 2 * weights
