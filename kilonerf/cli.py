"""The ``kilonerf`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn
from pathlib import Path

from kilonerf.errors import KiloNerfError
from kilonerf.names import MODELS, PRESETS, PROCEDURAL_KINDS, SCENE_TYPES, STAGES, TEACHERS, WRITE_FORMATS
from kilonerf.runtime import reuse_freed_memory


def _cmd_convert(args: argparse.Namespace) -> int:
    from kilonerf.data.convert import convert_scene
    from kilonerf.io import check_output_parent

    check_output_parent(args.dst, "DST", create=True)
    convert_scene(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    print(f"wrote {args.to} scene to {args.dst}")
    return 0


def _cmd_procedural(args: argparse.Namespace) -> int:
    from kilonerf.data.procedural import write_procedural_scene
    from kilonerf.io import check_output_parent

    check_output_parent(args.out, "OUT", create=True)
    out = write_procedural_scene(
        args.out, size=args.size, n_train=args.train, n_val=args.val, n_test=args.test,
        seed=args.seed, overwrite=args.overwrite, kind=args.kind, height=args.height,
    )  # fmt: skip
    size = f"{args.size} x {args.height or args.size}"
    print(f"wrote the {args.kind} procedural scene ({args.train}/{args.val}/{args.test} views, {size} px) to {out}")
    return 0


def _cmd_process(args: argparse.Namespace) -> int:
    from kilonerf.capture.process import format_summary, process_capture

    result = process_capture(args.input, args.out, matching=args.matching, max_images=args.max_images,
                             max_size=args.max_size, overwrite=args.overwrite)  # fmt: skip
    print(format_summary(result))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from kilonerf.run.pipeline import open_run, run_pipeline

    overrides = dict(_parse_setting(s) for s in args.set)
    run, cfg, scene = open_run(args.data, args.out, args.preset, args.teacher, args.no_distill, overrides,
                               args.scene_type, args.downscale, args.max_size)  # fmt: skip
    device = torch_device(args.device)
    print(f"run {run.root}: preset {cfg.preset}, teacher {cfg.teacher}, device {device}")
    run_pipeline(run, cfg, scene, device, [args.stage] if args.stage else None)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from kilonerf.demo import DemoConfig, run_demo

    overrides = dict(_parse_setting(s) for s in args.set)
    device = torch_device(args.device)
    run_demo(args.out, DemoConfig(size=args.size, overrides=overrides), device)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from kilonerf.evaluation import evaluate_split, format_table
    from kilonerf.io import atomic_write_json, check_output_file
    from kilonerf.run.models import default_model, load_renderer, load_run_scene
    from kilonerf.run.folder import RunDir

    if args.json:
        check_output_file(args.json, "--json")
    run = RunDir(Path(args.run))
    run.read_meta()
    device = torch_device(args.device)
    model = args.model or default_model(run)
    scene = load_run_scene(run, args.data)
    if args.split not in scene.splits:
        raise KiloNerfError(f"{scene.root}: no '{args.split}' split (has: {', '.join(scene.splits)})")
    render = load_renderer(run, model, scene, device, backend=args.backend)
    out_dir = run.eval_dir(model, args.split)
    info = {"model": model, "data": str(Path(scene.root or "").resolve())}
    result = evaluate_split(render, scene, args.split, out_dir, device, max_views=args.max_views, info=info)
    print(format_table({model: result}))
    print(f"{result['views']} views of '{args.split}'; images and metrics.json in {out_dir}")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from kilonerf.render_path import render_run

    if args.out is None and args.save_path is None:
        raise KiloNerfError("give --out (a .mp4 file or a folder) and/or --save-path FILE.json")
    device = torch_device(args.device)
    path, model = render_run(
        args.run, args.path, args.out, model=args.model, width=args.resolution, frames=args.frames, fps=args.fps,
        device=device, data=args.data, save_path=args.save_path, overwrite=args.overwrite,
    )  # fmt: skip
    if args.save_path:
        print(f"wrote the camera path ({len(path)} frames) to {args.save_path}")
    if args.out:
        print(f"rendered {len(path)} frames of {path.width} x {path.height} with the {model} to {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kilonerf.report import write_report

    out = write_report(args.run, split=args.split, views=args.views, video=args.video)
    print(f"wrote {out} (open it in a browser; its images are in {out.parent / 'report'})")
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    import time

    from kilonerf.viewer.app import ViewerOptions, open_viewer
    from kilonerf.viewer.controls import MAX_HEIGHT, MIN_HEIGHT

    if not 0 <= args.port <= 65535:
        raise KiloNerfError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if args.height is not None and not MIN_HEIGHT <= args.height <= MAX_HEIGHT:
        raise KiloNerfError(f"--height must be in {MIN_HEIGHT}..{MAX_HEIGHT} pixels, got {args.height}")
    device = torch_device(args.device)
    options = ViewerOptions(height=args.height, model=args.model)
    viewer = open_viewer(args.run, args.data, device, options)
    try:
        viewer.start(args.host, args.port)
    except OSError as exc:
        raise KiloNerfError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    print(f"kilonerf viewer of {args.run} on {viewer.url} ({device}); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("kilonerf viewer: stopping", flush=True)
    finally:
        viewer.stop()
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from kilonerf.bench import format_bench, run_bench
    from kilonerf.io import atomic_write_json, check_output_file
    from kilonerf.run.models import load_run_scene
    from kilonerf.run.folder import RunDir

    if args.json:
        check_output_file(args.json, "--json")
    run = RunDir(Path(args.run))
    run.read_meta()
    for name in ("resolution", "views", "nerf_rays", "ess_rays"):
        if getattr(args, name) < 1:
            raise KiloNerfError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    scene = load_run_scene(run, args.data)
    result = run_bench(run, scene, args.resolution, args.views, torch_device(args.device), nerf_rays=args.nerf_rays,
                       ess_rays=args.ess_rays, backend=args.backend, psnr_check=not args.no_psnr)  # fmt: skip
    print(format_bench(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


def _parse_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise KiloNerfError(f"--set expects SECTION.NAME=VALUE (e.g. finetune_loop.max_steps=100), got '{text}'")
    return key, value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def at_least_one(text: str) -> float:
    value = float(text)
    if not 1.0 <= value < float("inf"):
        raise ValueError(text)
    return value


def torch_device(name: str | None):  # noqa: ANN201 - torch imported lazily to keep --help fast
    """The ``--device`` option: the named device, or cuda when available else cpu for None."""
    import torch

    from kilonerf.run.pipeline import default_device

    if name is None:
        return default_device()
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise KiloNerfError(f"--device: {exc}") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``kilonerf CMD: error: ...``) and exit code 2, like every other
    error of the command, instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kilonerf",
        description="KiloNeRF: train a radiance field as thousands of tiny MLPs and render it fast.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        help="the whole method on the built-in scene: train, evaluate, time against NeRF, report",
        description="Render the built-in procedural scene into OUT/scene, train every stage into OUT "
        "(cpu preset), evaluate teacher and student on the test split, time them against NeRF, and write "
        "OUT/summary.json and OUT/report.html. Re-running resumes.",
    )
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--size", type=positive_int, default=100, help="image size of the scene in pixels (default 100)")
    _add_device(p)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                   help="override one setting of the run, e.g. teacher_loop.max_steps=100")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "convert",
        help="write a scene (any supported format) in NSVF or Blender format",
        description="Load SRC (Blender, NSVF, LLFF or instant-ngp format, detected automatically) "
        "and write it to DST in the chosen format.",
    )
    p.add_argument("src", help="scene folder to read")
    p.add_argument("dst", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--to", choices=WRITE_FORMATS, required=True, help="output format")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "procedural",
        help="render the built-in procedural scene into a Blender-format folder",
        description="Ray-trace the built-in scene (textured solids, a glossy sphere) into OUT with "
        "train/val/test splits: on white with alpha (--kind object), or as a 360° capture in "
        "surroundings that every pixel sees (--kind unbounded: ground, distant pillars, sky). "
        "Deterministic from --seed; nothing is downloaded.",
    )
    p.add_argument("out", help="folder to write")
    p.add_argument("--kind", choices=PROCEDURAL_KINDS, default="object", help="object (default) or unbounded")
    p.add_argument("--size", type=positive_int, default=100, help="image width (and height) in pixels (default 100)")
    p.add_argument("--height", type=positive_int, default=None, help="image height in pixels (default: --size)")
    p.add_argument("--train", type=positive_int, default=100, help="training views (default 100)")
    p.add_argument("--val", type=int, default=20, help="validation views (default 20)")
    p.add_argument("--test", type=int, default=50, help="test views (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_procedural)

    p = sub.add_parser(
        "process",
        help="camera poses for your own photos or video (COLMAP on the CPU), written as a scene to train",
        description="Run structure from motion (pycolmap: SIFT features, matching, incremental mapping, one shared "
        "camera with radial distortion) on INPUT, a folder of JPEG/PNG photos or a video file, and write the scene "
        "folder OUT: transforms.json (instant-ngp convention), images/, points.ply, bbox.txt, scene_type.txt and "
        "capture.json (the world transform applied and the statistics). `kilonerf train OUT` then needs no option.",
    )
    p.add_argument("input", help="folder of photos (JPEG/PNG, one camera, one size) or a video (MP4, MOV, ...)")
    p.add_argument("--out", required=True, help="scene folder to write (must not exist or be empty unless --overwrite)")
    p.add_argument("--matching", choices=("exhaustive", "sequential"),
                   help="image pairs to match: every pair, or neighbours in order (default: sequential for a video, "
                   "exhaustive for photos)")
    p.add_argument("--max-images", type=positive_int, metavar="N",
                   help="use N photos picked evenly, or N video frames (the sharpest of N windows; default 100)")
    p.add_argument("--max-size", type=positive_int, metavar="PIXELS",
                   help="shrink images to at most this many pixels on their longest side (default: keep the size)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_process)

    p = sub.add_parser(
        "train",
        help="train (or resume) a run: teacher, occupancy, distill, finetune",
        description="Train every stage in order into the run directory OUT, skipping finished stages "
        "and resuming an interrupted one. --stage runs one stage alone (re-running it if it was done).",
    )
    p.add_argument("data", nargs="?", help="scene folder (any supported format); optional when resuming OUT")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--stage", choices=STAGES, help="run only this stage")
    p.add_argument("--teacher", choices=TEACHERS, help="teacher field (default: fast)")
    p.add_argument("--preset", choices=PRESETS, help="hyperparameters (default: cpu)")
    p.add_argument("--no-distill", action="store_true", help="train the tiny MLPs from scratch (the paper's ablation)")
    p.add_argument("--scene-type", choices=("auto", *SCENE_TYPES), default="auto",
                   help="object (a box around the scene) or forward (forward-facing, NDC); default: from the cameras")
    p.add_argument("--downscale", type=at_least_one, metavar="N", help="train on images N times smaller than the files")
    p.add_argument("--max-size", type=positive_int, metavar="PIXELS",
                   help="train on images at most this long on a side (the cpu preset's default: 800)")
    _add_device(p)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                   help="override one setting of a new run, e.g. finetune_loop.max_steps=200")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "eval",
        help="render every view of a split and report PSNR / SSIM / LPIPS / ms per frame",
        description="Render each view of SPLIT with the run's model, save the images and metrics.json "
        "under RUN/eval/MODEL_SPLIT/, and print the means.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--model", choices=MODELS, help="default: student if trained, else teacher")
    p.add_argument("--data", help="another folder holding the same scene (e.g. only its test split)")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--json", help="also write the means and per-image values to this JSON file")
    p.add_argument("--max-views", type=positive_int, help="evaluate only the first N views")
    p.add_argument("--backend", metavar="cpu|torch_ref",
                   help="tiny-MLP backend of the student (default: cpu, the compiled one, on the CPU)")
    _add_device(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "render",
        help="render a video (MP4) or PNG frames along a camera path",
        description="Render the run's model along a camera path: orbit or spiral (generated around the scene "
        "box from the training cameras), test (the test split's cameras) or a camera-path JSON file "
        "(see the README). OUT ending in .mp4 is an H.264 video; a name without a suffix (or an existing "
        "folder) gets PNG frames.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--path", default="auto", metavar="orbit|spiral|test|FILE.json",
                   help="camera path (default: spiral for forward-facing scenes, orbit otherwise)")
    p.add_argument("--out", help="OUT.mp4 or a folder for PNG frames")
    p.add_argument("--model", choices=MODELS, help="default: student if trained, else teacher")
    p.add_argument("--resolution", type=positive_int, metavar="WIDTH",
                   help="frame width in pixels; the height keeps the aspect ratio (default: the scene's)")
    p.add_argument("--frames", type=positive_int,
                   help="frames of an orbit / spiral (default 120); for test / FILE: use only the first N")
    p.add_argument("--fps", type=positive_float, default=30.0, help="video frame rate (default 30)")
    p.add_argument("--save-path", metavar="FILE.json", help="also write the camera path as JSON (to edit and reuse)")
    p.add_argument("--data", help="the scene folder, if not the one the run was trained on")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_device(p)
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser(
        "report",
        help="write RUN/report.html: views, metrics, speed, training curves, video",
        description="Write an offline HTML page RUN/report.html (images in RUN/report/) showing ground truth, "
        "teacher, student and error images for a few evaluated views, the metrics of `kilonerf eval`, "
        "the speed table of RUN/summary.json, training curves and the video. Missing pieces get a note.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--split", help="evaluated split to show (default: test, else val)")
    p.add_argument("--views", type=positive_int, default=4, help="views shown side by side (default 4)")
    p.add_argument("--video", help="video to embed (default: RUN/video.mp4 if present)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "view",
        help="interactive web viewer of a run (open the printed address in a browser)",
        description="Serve a browser viewer of RUN: orbit, pan and zoom while the fast renderer draws "
        "the scene (fewer pixels while moving, full resolution once still), with the training cameras, "
        "scene box and network grid as overlays. Binds 127.0.0.1 unless --host says otherwise; over SSH, "
        "forward the port (ssh -L P:127.0.0.1:P host).",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--model", choices=MODELS, help="model shown first (default: student if trained)")
    p.add_argument("--height", type=int, help="full-resolution frame height in pixels (default: the photos')")
    p.add_argument("--data", help="another folder holding the same scene")
    _add_device(p)
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser(
        "bench",
        help="time NeRF, NeRF + skipping + early termination and KiloNeRF on this machine (the paper's table)",
        description="Render the first views of the run's scene at one resolution with: the paper's NeRF MLP "
        "(384 samples per ray, no skipping; an untrained one, timed on a subset of rays and scaled), the same MLP "
        "with the run's occupancy grid and early ray termination, and the KiloNeRF student. Prints ms per frame, "
        "samples per ray, speedup over NeRF, the backend's samples/s against the measured fp32 matrix-product rate, "
        "the renderer's time split, and the PSNR of the fast backend against the reference one.",
    )
    p.add_argument("run", help="run directory with a fine-tuned student")
    p.add_argument("--resolution", type=int, default=800, help="frame width in pixels (default 800)")
    p.add_argument("--views", type=int, default=2, help="views of the test (else val) split (default 2)")
    p.add_argument("--data", help="another folder holding the same scene")
    p.add_argument("--json", help="also write rows, samples_per_s, peak_fraction and details to this JSON file")
    p.add_argument("--backend", metavar="cpu|torch_ref", help="KiloNeRF's backend (default: cpu on the CPU)")
    p.add_argument("--nerf-rays", type=int, default=128, help="rays per view timed for the NeRF row (default 128)")
    p.add_argument("--ess-rays", type=int, default=1024,
                   help="rays per view timed for the NeRF + ESS + ERT row (default 1024)")
    p.add_argument("--no-psnr", action="store_true", help="skip the PSNR comparison with the reference backend")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    reuse_freed_memory()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KiloNerfError as exc:
        print(f"kilonerf: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kilonerf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
