"""The prepared GPU check of issue 18: one run on a bare GPU machine, at most ~8 minutes.

    python benchmarks/gpu_check.py --out-dir $OUT [--data runs/gpu_carry/data/lego_200]
    python benchmarks/gpu_check.py --dry-run --out-dir runs/gpu_check_dry     # CPU, tiny, minutes

Steps, each timed and logged (``gpu_check.log``) into one JSON (``gpu_check.json``):

1. the Triton tests (``tests/kernels/test_triton*.py``) in a subprocess: on a GPU they run the
   compiled kernels on CUDA tensors, elsewhere the Triton interpreter on CPU tensors;
2. the grouped tiny-MLP kernel alone: 4096 networks, 2^20 samples, ``torch_ref`` against the
   ``triton`` kernel in each operand precision and a few tile shapes (median of
   ``triton.testing.do_bench``), with the largest error against a float64 reference;
3. the pipeline: ``kilonerf train`` of the scene with the ``cpu`` preset on the device, stage
   times (target: <= 3 minutes on an H100 / H200);
4. teacher and student on the val split (PSNR, SSIM), the student with ``torch_ref`` and with
   each Triton backend (target: PSNR equal to the reference's within 0.05 dB);
5. 800 px wide frames (intrinsics scaled from the scene's cameras, as ``kilonerf bench``
   makes them) per backend: median milliseconds (target: <= 2 ms on an H100 / H200).

``--dry-run`` runs the same steps on the CPU at toy size (a 16 px procedural scene trained for
a few steps, 24 px frames, the kernels in the Triton interpreter), to check the script end to
end where there is no GPU; its figures mean nothing. How to run it on a lent GPU machine
(data and wheels carried): README.md, section GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_FRAME_MS = 2.0
TARGET_PIPELINE_S = 180.0
TARGET_PSNR_DB = 0.05
BACKENDS = ("torch_ref", "triton", "triton_fp16")
TILE_SHAPES = ((32, 4), (64, 4), (64, 8), (128, 8))
"""(samples per program, warps) tried in the kernel step; the backends use 64 and 4."""


class Log:
    """Prints and appends to the log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def timed(device: torch.device, fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median and all wall-clock milliseconds of ``fn`` (synchronised), after one warm-up."""
    from kilonerf.kernels.perf import sync_device

    fn()
    ms = []
    for _ in range(repeats):
        sync_device(device)
        t0 = time.perf_counter()
        fn()
        sync_device(device)
        ms.append((time.perf_counter() - t0) * 1000.0)
    return sorted(ms)[len(ms) // 2], ms


def run_tests(log: Log, device: torch.device) -> dict[str, Any]:
    """The Triton tests in a subprocess (on the CPU without the slow compile-only one)."""
    env = dict(os.environ)
    if device.type == "cuda":
        env.pop("TRITON_INTERPRET", None)
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "kernels").glob("test_triton*.py"))
    marks = [] if device.type == "cuda" else ["-m", "not slow"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *marks, *tests], cwd=ROOT,
                          env=env, capture_output=True, text=True)  # fmt: skip
    out = (proc.stdout + proc.stderr).strip()
    log(f"tests ({'compiled, CUDA' if device.type == 'cuda' else 'interpreter, CPU'}): rc {proc.returncode}\n{out[-3000:]}")
    return {"returncode": proc.returncode, "passed": proc.returncode == 0, "seconds": time.perf_counter() - t0,
            "files": tests, "tail": out[-3000:]}  # fmt: skip


def kernel_step(log: Log, device: torch.device, dry: bool) -> dict[str, Any]:
    from kilonerf.kernels import MultiNetParams, get_backend
    from kilonerf.kernels.base import layer_shapes
    from kilonerf.kernels.triton_mlp import PRECISIONS, TritonBackend

    nets, n, rays = (8, 512, 64) if dry else (4096, 1 << 20, 1 << 17)
    gen = torch.Generator(device=device).manual_seed(0)
    ws = [torch.randn((nets, i, o), generator=gen, device=device) / i**0.5 for i, o in layer_shapes()]
    bs = [torch.randn((nets, o), generator=gen, device=device) * 0.3 for _, o in layer_shapes()]
    params = MultiNetParams(tuple(ws), tuple(bs))
    net = torch.randint(0, nets, (n,), generator=gen, device=device)
    pos = torch.rand((n, 3), generator=gen, device=device) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn((rays, 3), generator=gen, device=device), dim=-1)
    ray_of = torch.randint(0, rays, (n,), generator=gen, device=device)
    exact = MultiNetParams(tuple(w.double() for w in ws), tuple(b.double() for b in bs))
    ref_sigma, ref_rgb = get_backend("torch_ref").evaluate(exact, net, pos.double(), dirs.double(), ray_of)
    repeats = 1 if dry else 20
    rows = []
    variants: list[tuple[str, Any]] = [("torch_ref", get_backend("torch_ref"))]
    for prec in PRECISIONS:
        shapes = TILE_SHAPES[1:2] if dry else TILE_SHAPES
        variants += [(f"triton {prec} {bm}x{nw}", TritonBackend(prec, bm, nw)) for bm, nw in shapes]
    for name, be in variants:
        with torch.no_grad():
            sigma, rgb = be.evaluate(params, net, pos, dirs, ray_of)
            ms, _ = timed(device, lambda: be.evaluate(params, net, pos, dirs, ray_of), repeats)
        row = {"name": name, "ms": ms, "msamples_per_s": n / ms / 1e3,
               "max_err_sigma": float((sigma.double() - ref_sigma).abs().max()),
               "max_err_rgb": float((rgb.double() - ref_rgb).abs().max())}  # fmt: skip
        rows.append(row)
        log(f"kernel {name:<22} {ms:9.3f} ms  {row['msamples_per_s']:9.1f} M samples/s  "
            f"max err sigma {row['max_err_sigma']:.2e} rgb {row['max_err_rgb']:.2e}")  # fmt: skip
    return {"networks": nets, "samples": n, "rays": rays, "rows": rows}


def train_step(log: Log, args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, Any, dict[str, Any]]:
    from kilonerf.run.pipeline import open_run, run_pipeline, stage_seconds

    overrides: dict[str, str] = {}
    data = Path(args.data)
    if args.dry_run:
        from kilonerf.data.procedural import write_procedural_scene
        from tests.helpers.runs import TINY_TRAIN

        data = write_procedural_scene(Path(args.run).parent / "scene", size=16, n_train=4, n_val=2, n_test=2, overwrite=True)
        overrides = dict(s.split("=", 1) for s in TINY_TRAIN[1::2])
    run, cfg, scene = open_run(data, args.run, "cpu", None, False, overrides)
    t0 = time.perf_counter()
    run_pipeline(run, cfg, scene, device)
    wall = time.perf_counter() - t0
    stages = stage_seconds(run)
    log(f"pipeline ({data.name}, cpu preset): {wall:.1f} s this run; stage seconds {stages}")
    return run, cfg, scene, {"scene": data.name, "wall_s": wall, "stage_seconds": stages,
                             "stages_total_s": sum(stages.values())}  # fmt: skip


def eval_step(log: Log, run: Any, scene: Any, device: torch.device, split: str) -> dict[str, Any]:
    from kilonerf.evaluation import evaluate_split
    from kilonerf.run.models import load_renderer

    rows: dict[str, Any] = {}
    for label, model, backend in [("teacher", "teacher", None), *((f"student/{b}", "student", b) for b in BACKENDS)]:
        render = load_renderer(run, model, scene, device, backend=backend)
        r = evaluate_split(render, scene, split, None, device, progress=False)
        rows[label] = {k: r[k] for k in ("psnr", "ssim", "lpips", "ms_per_frame", "views")}
        log(f"eval {label:<22} PSNR {r['psnr']:.3f} dB  SSIM {r['ssim']:.4f}  {r['ms_per_frame']:.1f} ms/view")
    return rows


def frame_step(log: Log, run: Any, scene: Any, device: torch.device, width: int, views: int, repeats: int) -> dict[str, Any]:
    from kilonerf.bench import scene_views
    from kilonerf.run.models import load_student_renderer

    renderer = load_student_renderer(run, scene, device)
    frames = scene_views(scene, views, width, device)
    out: dict[str, Any] = {"resolution": [frames[0].width, frames[0].height], "views": len(frames)}
    for b in BACKENDS:
        medians, samples, passes = [], 0, 0
        for v in frames:
            ms, _ = timed(device, lambda: renderer.render_output(v.origins, v.dirs, backend=b), repeats)
            medians.append(ms)
            res = renderer.render_output(v.origins, v.dirs, backend=b)
            samples, passes = samples + res.samples_evaluated, passes + res.passes
        out[b] = {"ms_per_frame": sum(medians) / len(medians), "ms_per_view": medians, "passes": passes,
                  "samples_per_ray": samples / sum(v.origins.shape[0] for v in frames)}  # fmt: skip
        log(f"frames {b:<12} {out[b]['ms_per_frame']:9.2f} ms/frame at {frames[0].width}x{frames[0].height} "
            f"({out[b]['samples_per_ray']:.2f} samples/ray, median of {repeats} per view)")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "runs" / "gpu_carry" / "data" / "lego_200"))
    ap.add_argument("--out-dir", default=str(ROOT / "runs" / "gpu_check"), help="where gpu_check.json and .log go")
    ap.add_argument("--run", help="run folder to train into (default: a new temporary folder)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, kernels in the Triton interpreter")
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--views", type=int, default=2, help="views timed at --width")
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton is first imported
        args.width, args.views = min(args.width, 12), 1
    elif not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --dry-run for the CPU check")
    device = torch.device("cpu" if args.dry_run else "cuda")
    args.run = args.run or tempfile.mkdtemp(prefix="kilonerf_gpu_check_") + "/run"
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = Log(out_dir / "gpu_check.log")

    import triton

    from kilonerf.io import atomic_write_json
    from kilonerf.kernels.perf import machine_name

    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine_name(device), "dry_run": args.dry_run, "python": platform.python_version(),
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "targets": {"frame_ms": TARGET_FRAME_MS, "pipeline_s": TARGET_PIPELINE_S, "psnr_db": TARGET_PSNR_DB},
    }  # fmt: skip
    log(f"gpu_check on {result['machine']} (torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda})")
    json_path = out_dir / "gpu_check.json"
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("tests", lambda: run_tests(log, device)),
        ("kernel", lambda: kernel_step(log, device, args.dry_run)),
    ]
    for name, fn in steps:
        result[name] = _guarded(log, name, fn)
        atomic_write_json(json_path, result)
    trained = _guarded(log, "pipeline", lambda: train_step(log, args, device))
    if isinstance(trained, tuple):
        run, _, scene, result["pipeline"] = trained
        atomic_write_json(json_path, result)
        result["eval"] = _guarded(log, "eval", lambda: eval_step(log, run, scene, device, args.split))
        atomic_write_json(json_path, result)
        repeats = 1 if args.dry_run else 10
        result["frames"] = _guarded(log, "frames", lambda: frame_step(log, run, scene, device, args.width, args.views, repeats))
    else:
        result["pipeline"] = trained
    result["verdict"] = _verdict(result)
    result["total_s"] = time.perf_counter() - t_start
    log(f"verdict: {result['verdict']}  (total {result['total_s']:.0f} s)")
    atomic_write_json(json_path, result)


def _guarded(log: Log, name: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``{"error": ...}`` (logged with its traceback) so later steps still run."""
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing step must not lose the others' figures
        import traceback

        log(f"{name} FAILED after {time.perf_counter() - t0:.1f} s: {exc}\n{traceback.format_exc()}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Each target against what was measured (None where its step failed)."""
    frames, ev, pipe = result.get("frames") or {}, result.get("eval") or {}, result.get("pipeline") or {}
    verdict: dict[str, Any] = {"tests_passed": (result.get("tests") or {}).get("passed")}
    wall = pipe.get("wall_s")
    verdict["pipeline_s"] = wall
    verdict["pipeline_within_target"] = None if wall is None else wall <= TARGET_PIPELINE_S
    for b in BACKENDS[1:]:
        ms = (frames.get(b) or {}).get("ms_per_frame")
        ref, ours = (ev.get("student/torch_ref") or {}).get("psnr"), (ev.get(f"student/{b}") or {}).get("psnr")
        diff = None if ref is None or ours is None else abs(ours - ref)
        verdict[b] = {"ms_per_frame": ms, "frame_within_target": None if ms is None else ms <= TARGET_FRAME_MS,
                      "psnr_diff_db": diff, "psnr_within_target": None if diff is None else diff <= TARGET_PSNR_DB}  # fmt: skip
    return verdict


if __name__ == "__main__":
    main()
