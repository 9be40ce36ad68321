"""``write_report``: RUN/report.html plus its images in RUN/report/, all written atomically."""

from __future__ import annotations

import os
import shutil
from html import escape
from pathlib import Path
from typing import Any

from kilonerf.io import atomic_dir, atomic_write_text
from kilonerf.report.capture import plot_capture
from kilonerf.report.curves import plot_training_curves
from kilonerf.report.html import cell, note, page, table, views_section
from kilonerf.report.images import pick_views, write_views
from kilonerf.report.sources import ReportInputs, gather
from kilonerf.run.folder import RunDir

ASSETS = "report"
METRIC_KEYS = ("psnr", "ssim", "ssim_skimage", "lpips", "ms_per_frame", "views")
STAGE_KEYS = ("steps", "seconds", "val_psnr")


def _overview(inputs: ReportInputs) -> str:
    meta, cfg = inputs.meta, inputs.meta.get("config", {})
    items = {
        "scene": meta.get("data"),
        "preset": cfg.get("preset"),
        "teacher": cfg.get("teacher"),
        "student trained from scratch (no distillation)": cfg.get("no_distill") or None,
        "kilonerf version": meta.get("kilonerf_version"),
    }
    return "<ul>" + "".join(f"<li>{escape(k)}: {escape(str(v))}</li>" for k, v in items.items() if v is not None) + "</ul>"


def _metrics(inputs: ReportInputs) -> str:
    def hint(model: str) -> str:
        return f"`kilonerf eval {inputs.run.root} --model {model} --split {inputs.split or 'test'}`"

    if not inputs.evals:
        return note(f"no evaluation of the '{inputs.split or 'any'}' split yet; run {hint('student')} and {hint('teacher')}")
    parts = [table(list(inputs.evals.items()), METRIC_KEYS, "model")]
    missing = [m for m in ("teacher", "student") if m not in inputs.evals]
    parts += [note(f"no {m} evaluation of '{inputs.split}'; run {hint(m)}") for m in missing]
    return "".join(parts)


def _speed(summary: dict[str, Any] | None) -> str:
    if not summary:
        return note("no speed measurements (RUN/summary.json, written by `kilonerf bench`)")
    models = [(m, summary[m]) for m in ("teacher", "student") if isinstance(summary.get(m), dict)]
    parts = [table(models, ("psnr", "ssim", "lpips", "ms_per_frame"), "model")] if models else []
    ratios = [(label, value) for label, value in speedups(summary).items() if value is not None]
    if ratios:
        parts.append("<ul>" + "".join(f"<li>{escape(label)}: <b>{cell('speedup', v)}</b></li>" for label, v in ratios)
                     + "</ul>")  # fmt: skip
    bench = summary.get("bench")
    bench_rows = bench.get("rows") if isinstance(bench, dict) else bench
    rows = [(str(r.get("name", "?")), r) for r in bench_rows or [] if isinstance(r, dict)]
    if rows:
        parts.append(table(rows, ("ms_per_frame", "samples_per_ray", "speedup"), "renderer"))
    if summary.get("machine"):
        parts.append(f"<p>machine: {escape(str(summary['machine']))}</p>")
    return "".join(parts) or note("RUN/summary.json has no speed figures")


def speedups(summary: dict[str, Any]) -> dict[str, float | None]:
    """The two ratios a summary supports, labelled: KiloNeRF over the paper's NeRF (from
    ``kilonerf bench``) and the student over the teacher (their evaluated ms per frame)."""
    over_nerf = summary.get("speedup_over_nerf", summary.get("speedup"))  # "speedup": older demo summaries
    ms = {m: summary[m].get("ms_per_frame") if isinstance(summary.get(m), dict) else None for m in ("teacher", "student")}
    over_teacher = None
    if all(isinstance(v, (int, float)) and v > 0 for v in ms.values()):
        over_teacher = float(ms["teacher"]) / float(ms["student"])  # type: ignore[arg-type]
    return {
        "KiloNeRF speed-up over NeRF (kilonerf bench)": over_nerf if isinstance(over_nerf, (int, float)) else None,
        "student speed-up over the teacher (ms per frame in eval)": over_teacher,
    }


def _training(inputs: ReportInputs, assets: Path) -> str:
    if not inputs.stages:
        return note("no training record (RUN/stages.json)")
    drawn = plot_training_curves(inputs.stages, assets / "training_curves.png")
    parts = [f'<img class="curves" src="{ASSETS}/training_curves.png" alt="training curves">'] if drawn else []
    if not drawn:
        parts.append(note("no training history to plot"))
    rows = [(s, e) for s, e in inputs.stages.items() if isinstance(e, dict)]
    parts.append(table(rows, STAGE_KEYS, "stage"))
    return "".join(parts)


def _video(inputs: ReportInputs, assets: Path) -> str:
    if inputs.video is None:
        root = inputs.run.root
        return note(f"no video; make one with `kilonerf render {root} --path orbit --out {root / 'video.mp4'}`")
    video, root = inputs.video.resolve(), inputs.run.root.resolve()
    if video.is_relative_to(root):
        src = os.path.relpath(video, root)
    else:  # copied in, so the run folder stays self-contained
        src = f"{ASSETS}/video{video.suffix}"
        shutil.copyfile(video, assets / f"video{video.suffix}")
    return f'<video controls loop muted src="{escape(Path(src).as_posix())}"></video>'


def _capture(inputs: ReportInputs, assets: Path) -> str | None:
    """The cameras and sparse points of a scene made by `kilonerf process`; None for other scenes."""
    data = inputs.meta.get("data")
    if not data or not plot_capture(Path(data), assets / "capture.png"):
        return None
    return f'<img class="curves" src="{ASSETS}/capture.png" alt="cameras and sparse points">'


def write_report(run_dir: str | Path, split: str | None = None, views: int = 4, video: str | Path | None = None) -> Path:
    """Write RUN/report.html and its assets in RUN/report/ (replaced whole); returns the page.

    Shows, for ``views`` views of the evaluated ``split`` (default: test, else val), the ground
    truth, the teacher's and the student's renders (from ``kilonerf eval``) and the error
    heatmap; the cameras and sparse points of a processed capture; the metrics; the speed table of RUN/summary.json; training curves from
    RUN/stages.json; and ``video`` (default RUN/video.mp4). Missing pieces get a note.
    """
    run = RunDir(Path(run_dir))
    inputs = gather(run, split, video)
    with atomic_dir(run.root / ASSETS, overwrite=True) as assets:
        rows, view_notes = write_views(inputs, pick_views(inputs.evals, views), assets)
        view_html = views_section(rows, ASSETS) if rows else note("no evaluated views to show")
        sections = [
            ("Run", _overview(inputs)),
            (f"Quality on the '{inputs.split}' split" if inputs.split else "Quality", _metrics(inputs)),
            ("Views", view_html + "".join(note(n) for n in view_notes)),
            ("Speed", _speed(inputs.summary)),
            ("Training", _training(inputs, assets)),
            ("Video", _video(inputs, assets)),
        ]
        capture = _capture(inputs, assets)
        if capture is not None:
            sections.insert(1, ("Capture: cameras and sparse points", capture))
    out = run.report_path
    atomic_write_text(out, page(f"KiloNeRF report: {run.root.name}", sections))
    return out
