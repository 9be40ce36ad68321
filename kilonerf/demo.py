"""``kilonerf demo``: the whole method on the built-in procedural scene, in minutes on a CPU.

Renders the procedural scene into ``OUT/scene``, trains every stage into the run directory
``OUT`` (``cpu`` preset), evaluates teacher and student on the test split, renders an orbit
video of the student (``OUT/video.mp4``), times them against the paper's NeRF (``kilonerf
bench``), and writes ``OUT/summary.json`` and ``OUT/report.html``.
Re-running it resumes: finished steps are skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from kilonerf.data.procedural import write_procedural_scene
from kilonerf.evaluation import evaluate_split, format_table
from kilonerf.io import atomic_write_json
from kilonerf.run.models import load_renderer
from kilonerf.render_path import render_run
from kilonerf.run.pipeline import (
    STAGES, check_new_run_root, new_config, open_run, run_pipeline, stage_done, stage_seconds,
)
from kilonerf.run.folder import RunDir

SUMMARY_KEYS = ("psnr", "ssim", "lpips", "ms_per_frame")


@dataclass(frozen=True)
class DemoConfig:
    size: int = 100
    n_train: int = 100
    n_val: int = 10
    n_test: int = 50
    seed: int = 0
    bench_resolution: int = 100
    video_frames: int = 60
    overrides: dict[str, Any] = field(default_factory=dict)
    """``SECTION.NAME`` -> value settings of the run (as ``kilonerf train --set``) over the
    ``cpu`` preset's and :data:`DEMO_SETTINGS`."""


DEMO_SETTINGS: dict[str, Any] = {
    "finetune.num_samples": 128, "teacher_params.total_steps": 2000, "teacher_loop.max_steps": 2000,
}
"""The demo's own settings over the ``cpu`` preset, to stay within 5 minutes on 2 cores with its
student at ~31.98 dB on the test split: fine-tuning with 128 samples per ray instead of 192
(saves ~22 s; on lego_100 it would cost 0.06 dB), and the teacher's 2000 steps instead of the
preset's 3000 (docs/benchmarks.md)."""


# Seconds per step measured on 2 idle CPU cores (Intel Xeon, AMX), for the overall ETA.
_PLANNED = {"scene": 4.0, "teacher": 120.0, "occupancy": 12.0, "distill": 52.0, "finetune": 66.0,
            "eval": 7.0, "video": 1.0, "bench": 2.0, "report": 2.0}  # fmt: skip


class DemoProgress:
    """Prints one line per step with the elapsed time and an overall ETA.

    The ETA is the planned time of the remaining steps (``_PLANNED``), scaled by how this
    machine compares with the plan on the steps run so far (once they are long enough to tell);
    skipped (already finished) steps count as done.
    """

    def __init__(self, steps: list[str]) -> None:
        self.steps, self.t0 = steps, time.perf_counter()
        self.remaining = sum(_PLANNED[s] for s in steps)
        self.planned_run = self.actual_run = 0.0
        self._step_t0 = self.t0

    def start(self, step: str) -> None:
        k = self.steps.index(step) + 1
        elapsed = time.perf_counter() - self.t0
        speed = self.actual_run / self.planned_run if self.planned_run >= 30.0 else 1.0
        eta = tqdm.format_interval(speed * self.remaining)
        print(f"[demo {k}/{len(self.steps)}] {step}  (elapsed {tqdm.format_interval(elapsed)}, overall ETA ~{eta})", flush=True)
        self._step_t0 = time.perf_counter()

    def finish(self, step: str, skipped: bool = False) -> None:
        self.remaining -= _PLANNED[step]
        if not skipped:
            self.planned_run += _PLANNED[step]
            self.actual_run += time.perf_counter() - self._step_t0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), device: torch.device | str = "cpu") -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns the summary written to ``out/summary.json``."""
    from kilonerf.bench import run_bench
    from kilonerf.report import write_report

    out, device = Path(out), torch.device(device)
    scene_dir = out / "scene"
    settings = {**DEMO_SETTINGS, **config.overrides}
    if not RunDir(out).exists():
        new_config("cpu", "fast", False, settings)  # bad settings fail before any work
        check_new_run_root(RunDir(out), scene_dir)  # before the scene is written into it
    steps = ["scene", *STAGES, "eval", "video", "bench", "report"]
    progress = DemoProgress(steps)

    progress.start("scene")
    have_scene = (scene_dir / "transforms_test.json").is_file()
    if not have_scene:
        write_procedural_scene(scene_dir, size=config.size, n_train=config.n_train, n_val=config.n_val,
                               n_test=config.n_test, seed=config.seed)  # fmt: skip
    progress.finish("scene", skipped=have_scene)

    run, cfg, scene = open_run(scene_dir, out, "cpu", None, False, settings)
    for stage in STAGES:
        progress.start(stage)
        done = stage_done(run, stage, cfg)
        if not done:
            run_pipeline(run, cfg, scene, device, [stage])
        progress.finish(stage, skipped=done)

    progress.start("eval")
    rows = {}
    for model in ("teacher", "student"):
        render = load_renderer(run, model, scene, device)
        rows[model] = evaluate_split(render, scene, "test", run.eval_dir(model, "test"), device)
    progress.finish("eval")

    progress.start("video")
    video = run.video_path
    have_video = video.is_file()
    if not have_video:
        render_run(out, "orbit", video, "student", frames=config.video_frames, device=device)
    progress.finish("video", skipped=have_video)

    progress.start("bench")
    bench = run_bench(run, scene, config.bench_resolution, views=1, device=device)
    progress.finish("bench")

    summary: dict[str, Any] = {m: {k: rows[m][k] for k in SUMMARY_KEYS} for m in rows}
    summary["speedup_over_nerf"] = _kilonerf_speedup(bench)
    summary["bench"] = bench
    summary["stage_seconds"] = stage_seconds(run)
    atomic_write_json(run.summary_path, summary)

    progress.start("report")
    report = write_report(run.root, split="test")
    progress.finish("report")
    summary["report"] = str(report)
    summary["seconds"] = progress.elapsed
    _print_summary(summary, rows)
    return summary


def _kilonerf_speedup(bench: dict[str, Any]) -> float:
    """The KiloNeRF row's speedup over NeRF in a ``run_bench`` result."""
    for row in bench["rows"]:
        if row["name"].lower().startswith("kilonerf"):
            return float(row["speedup"])
    raise KeyError("no KiloNeRF row in the bench result")


def _print_summary(summary: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    print()
    print(format_table(rows))
    w, h = summary["bench"]["resolution"]
    print(f"KiloNeRF renders {summary['speedup_over_nerf']:.0f} x faster than NeRF on this machine ({w} x {h} px)")
    print(f"demo finished in {tqdm.format_interval(summary['seconds'])}; report: {summary['report']}")
