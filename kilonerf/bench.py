"""``kilonerf bench``: the paper's render-time table for this machine.

Rows, all at the same resolution over the same views:

- **NeRF**: the paper's 8 x 256 MLP (skip at layer 4, 128-wide view layer), 384 samples per
  ray, no skipping. Its cost does not depend on its weights, so an untrained one is timed, on
  an evenly strided subset of each view's rays, and scaled linearly to the full frame.
- **NeRF + ESS + ERT**: the same MLP evaluated only where the run's occupancy grid and early
  ray termination leave samples. A NeRF's termination depends on its densities, and an
  untrained NeRF has none worth the name, so the trained student decides which samples the
  pass-based renderer evaluates (it was distilled from the teacher, so it terminates where a
  trained field does); those samples (of a subset of rays) are recorded and the NeRF MLP is
  timed on them in batches of 64k, scaled to the frame, plus the KiloNeRF renderer's own
  non-MLP time per frame (march, sort, compositing), i.e. the best such a renderer could do.
- **KiloNeRF**: the student with the fast renderer, every pixel of every view.

Also reported: the backend's samples/s inside the KiloNeRF renders (from the native
renderer's own phase clocks) against the machine's fp32 matrix-product rate measured in the
same process, the renderer's time split, and PSNR of the fast backend against the reference
backend at the scene's own resolution, where ground truth exists.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kilonerf.data.cameras import camera_rays, pixel_coords
from kilonerf.data.scene import Scene
from kilonerf.errors import KiloNerfError
from kilonerf.fields.multinet import MultiNetField
from kilonerf.fields.nerf import NeRFField
from kilonerf.kernels import GroupedBackend, MultiNetParams, default_render_backend, get_backend
from kilonerf.kernels.perf import machine_name, matmul_flops, nerf_mlp_flops, sync_device, tiny_mlp_flops
from kilonerf.metrics import psnr
from kilonerf.run.models import load_student_renderer
from kilonerf.render.dense import render_dense
from kilonerf.render.student import StudentRenderer
from kilonerf.run.folder import RunDir

NUM_SAMPLES = 384


@dataclass
class View:
    origins: Tensor
    dirs: Tensor
    height: int
    width: int


def bench_split(scene: Scene) -> str:
    for split in ("test", "val", "train"):
        if split in scene.splits and len(scene.indices(split)):
            return split
    raise KiloNerfError(f"{scene.root}: no views to benchmark")


def scene_views(scene: Scene, count: int, resolution: int | None, device: torch.device) -> list[View]:
    """The first ``count`` views of the test (else val) split, rescaled so that the width is
    ``resolution`` pixels (None: the images' own size); intrinsics scale with the image."""
    idx = scene.indices(bench_split(scene))[:count]
    views = []
    for i in idx.tolist():
        h, w = scene.image_size(i)
        scale = 1.0 if resolution is None else resolution / w
        hh, ww = max(1, round(h * scale)), max(1, round(w * scale))
        intr = torch.as_tensor(scene.intrinsics[i], dtype=torch.float32) * torch.tensor([ww / w, hh / h, ww / w, hh / h])
        pose = torch.as_tensor(scene.poses[i], dtype=torch.float32)
        o, d = camera_rays(pose, intr, pixel_coords(hh, ww))
        views.append(View(o.to(device), d.to(device), hh, ww))
    return views


def strided(n: int, m: int) -> Tensor:
    """``min(m, n)`` evenly spaced ray indices of ``n`` (a representative subset of a frame)."""
    return torch.linspace(0, n - 1, min(m, n)).round().long().unique()


class RecordingBackend(GroupedBackend):
    """Evaluates with ``inner`` and records the world points and directions it was asked for."""

    name = "recording"

    def __init__(self, grid_field: MultiNetField, inner: GroupedBackend) -> None:
        self.field, self.inner = grid_field, inner
        self.points: list[Tensor] = []
        self.dirs: list[Tensor] = []

    def evaluate(self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor,
                 dir_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.points.append(self.field.grid.to_world(net_index, local_pos))
        self.dirs.append(dirs if dir_index is None else dirs.index_select(0, dir_index))
        return self.inner.evaluate(params, net_index, local_pos, dirs, dir_index)


def time_mlp(field: NeRFField, points: Tensor, dirs: Tensor, batch: int = 1 << 16) -> float:
    """Seconds for ``field`` on all points, ``batch`` at a time (as a full frame's passes would)."""
    sync_device(points.device)
    t0 = time.perf_counter()
    for lo in range(0, points.shape[0], batch):
        field(points[lo : lo + batch], dirs[lo : lo + batch])
    sync_device(points.device)
    return time.perf_counter() - t0


@torch.no_grad()
def run_bench(
    run: RunDir, scene: Scene, resolution: int = 800, views: int = 2, device: torch.device | str = "cpu",
    nerf_rays: int = 128, ess_rays: int = 1024, backend: str | None = None, psnr_check: bool = True,
    matmul_size: int = 2048,
) -> dict[str, Any]:
    """Measure the table (see the module docstring) and return it as the ``--json`` dict.

    Args:
        resolution: frame width in pixels (height follows the views' aspect ratio).
        views: how many views of the test (else val) split.
        nerf_rays / ess_rays: rays per view timed for the NeRF / NeRF + ESS + ERT rows.
        backend: KiloNeRF's backend (default: :func:`default_render_backend`).
        psnr_check: also render the views at the scene's own size with the reference backend.
        matmul_size: side of the square ``torch.mm`` that measures the machine's fp32 rate.
    Returns:
        ``rows`` (``name``, ``ms_per_frame``, ``samples_per_ray``, ``speedup``, ``note``),
        ``samples_per_s``, ``peak_fraction`` and the details printed by :func:`format_bench`.
    """
    device = torch.device(device)
    renderer = load_student_renderer(run, scene, device)
    student = renderer.student
    bg = torch.as_tensor(scene.background, dtype=torch.float32, device=device)
    backend_name = backend or default_render_backend(device)
    be = get_backend(backend_name)
    frames = scene_views(scene, views, resolution, device)
    if not frames:
        raise KiloNerfError(f"{scene.root}: no views to benchmark")
    rays_per_frame = sum(v.origins.shape[0] for v in frames) / len(frames)

    def fast(v: View, backend_: str | GroupedBackend) -> Any:
        return renderer.render_output(v.origins, v.dirs, backend=backend_)

    peak = matmul_flops(matmul_size, device=device)  # best of this and a second measurement after the renders
    # KiloNeRF: whole frames, after one warm-up (builds or loads the kernels, touches the weights).
    fast(View(frames[0].origins[:64], frames[0].dirs[:64], 8, 8), be)
    k_ms, k_samples, profile = [], 0, {}
    for v in frames:
        sync_device(device)
        t0 = time.perf_counter()
        out = fast(v, be)
        sync_device(device)
        k_ms.append((time.perf_counter() - t0) * 1000.0)
        k_samples += out.samples_evaluated
        for key, sec in (out.profile or {}).items():
            profile[key] = profile.get(key, 0.0) + sec

    # NeRF rows, on subsets of rays of the same views.
    nerf = NeRFField().to(device).eval()
    nerf_time = ess_time = 0.0
    nerf_count = ess_count = ess_samples = 0
    for v in frames:
        n = v.origins.shape[0]
        sub = strided(n, nerf_rays)
        rays = renderer.field_rays(v.origins[sub], v.dirs[sub])
        # NUM_SAMPLES per camera ray, shared among its pieces.
        per_piece = max(2, NUM_SAMPLES // rays.pieces)
        sync_device(device)
        t0 = time.perf_counter()
        for lo in range(0, rays.origins.shape[0], 64):
            s = slice(lo, lo + 64)
            render_dense(nerf, rays.origins[s], rays.dirs[s], rays.near[s], rays.far[s], per_piece, bg)
        sync_device(device)
        nerf_time += time.perf_counter() - t0
        nerf_count += int(sub.shape[0])
        sub = strided(n, ess_rays)
        rec = RecordingBackend(student, be)
        out = renderer.render_output(v.origins[sub], v.dirs[sub], backend=rec)
        if rec.points:
            ess_time += time_mlp(nerf, torch.cat(rec.points), torch.cat(rec.dirs))
        ess_count += int(sub.shape[0])
        ess_samples += out.samples_evaluated
    # The renderer's own work besides the MLP (march, sort, compositing, Python), per frame.
    threads = torch.get_num_threads()
    wall = sum(k_ms) / 1000.0
    overhead_ms = max(0.0, wall - profile.get("mlp", 0.0) / threads) * 1000.0 / len(frames)

    rows = [
        {"name": "NeRF", "ms_per_frame": nerf_time / nerf_count * rays_per_frame * 1000.0,
         "samples_per_ray": float(NUM_SAMPLES),
         "note": f"timed on {nerf_count // len(frames)} rays per frame, scaled to {rays_per_frame:.0f}"},
        {"name": "NeRF + ESS + ERT", "ms_per_frame": ess_time / ess_count * rays_per_frame * 1000.0 + overhead_ms,
         "samples_per_ray": ess_samples / ess_count,
         "note": f"MLP timed on the samples of {ess_count // len(frames)} rays per frame, scaled to "
                 f"{rays_per_frame:.0f}, + KiloNeRF's non-MLP time"},
        {"name": "KiloNeRF", "ms_per_frame": sum(k_ms) / len(k_ms),
         "samples_per_ray": k_samples / (rays_per_frame * len(frames)),
         "note": f"every pixel, backend {be.name}"},
    ]  # fmt: skip
    for row in rows:
        row["speedup"] = rows[0]["ms_per_frame"] / row["ms_per_frame"]

    peak = max(peak, matmul_flops(matmul_size, device=device))
    mlp_seconds = profile.get("mlp", 0.0) / threads  # thread-seconds -> seconds on all threads
    samples_per_s = k_samples / mlp_seconds if mlp_seconds > 0 else k_samples / wall
    result: dict[str, Any] = {
        "rows": rows,
        "samples_per_s": samples_per_s,
        "peak_fraction": samples_per_s * tiny_mlp_flops() / peak,
        "resolution": [frames[0].width, frames[0].height],
        "views": len(frames),
        "threads": threads,
        "machine": machine_name(device),
        "backend": be.name,
        "precision": be.precision,
        "matmul_gflops": peak / 1e9,
        "matmul_size": matmul_size,
        "flops_per_sample": {"kilonerf": tiny_mlp_flops(), "nerf": nerf_mlp_flops()},
        "samples_per_s_basis": "MLP phase of the native renderer" if profile else "whole render (no phase clocks)",
        "profile": {k: s / (wall * threads) for k, s in profile.items()},
    }
    if profile:
        result["profile"]["other"] = max(0.0, 1.0 - sum(result["profile"].values()))
    if psnr_check:
        result["psnr"] = psnr_against_reference(renderer, scene, views, device, be)
    return result


def psnr_against_reference(
    renderer: StudentRenderer, scene: Scene, views: int, device: torch.device, be: GroupedBackend
) -> dict[str, float]:
    """Mean PSNR of ``be`` and of ``torch_ref`` against the photos of the same views at the
    scene's own resolution, and their difference."""
    split = bench_split(scene)
    idx = scene.indices(split)[:views]
    vals: dict[str, list[float]] = {"fast": [], "reference": []}
    for i, v in zip(idx.tolist(), scene_views(scene, views, None, device)):
        gt = scene.images[i].astype("float32") / 255.0
        for key, b in (("fast", be), ("reference", "torch_ref")):
            out = renderer.render_output(v.origins, v.dirs, backend=b)
            vals[key].append(psnr(out.rgb.clamp(0, 1).reshape(v.height, v.width, 3).cpu().numpy(), gt))
    fast_db, ref_db = sum(vals["fast"]) / len(idx), sum(vals["reference"]) / len(idx)
    return {"fast_db": fast_db, "reference_db": ref_db, "diff_db": abs(fast_db - ref_db),
            "resolution": list(scene.image_size(int(idx[0])))[::-1], "split": split}  # type: ignore[dict-item]


def format_bench(result: dict[str, Any]) -> str:
    """The table and the kernel / profile / PSNR lines, as ``kilonerf bench`` prints them."""
    w, h = result["resolution"]
    lines = [f"{w} x {h}, {result['views']} views, {result['machine']}", ""]
    head = f"{'':<18} {'ms/frame':>12} {'samples/ray':>12} {'speedup':>10}"
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['name']:<18} {r['ms_per_frame']:12.1f} {r['samples_per_ray']:12.2f} {r['speedup']:9.0f}x   {r['note']}")
    lines.append("")
    lines.append(
        f"backend {result['backend']} ({result.get('precision', 'fp32')}): {result['samples_per_s'] / 1e6:.2f} M samples/s "
        f"({result['flops_per_sample']['kilonerf']} FLOP each) = {result['peak_fraction'] * 100:.0f}% of the measured "
        f"fp32 matrix-product rate ({result['matmul_gflops']:.0f} GFLOP/s, {result['matmul_size']}^3 torch.mm); basis: {result['samples_per_s_basis']}"
    )
    if result["profile"]:
        split = ", ".join(f"{k} {v * 100:.0f}%" for k, v in result["profile"].items())
        lines.append(f"KiloNeRF render time split (thread-time): {split}")
    if "psnr" in result:
        p = result["psnr"]
        lines.append(
            f"PSNR at {p['resolution'][0]} x {p['resolution'][1]} ({p['split']}): backend {result['backend']} "
            f"{p['fast_db']:.3f} dB, torch_ref {p['reference_db']:.3f} dB, difference {p['diff_db']:.4f} dB"
        )
    if not math.isfinite(result["rows"][-1]["speedup"]):
        lines.append("warning: a row took no measurable time")
    return "\n".join(lines)
