"""The ``kilonerf`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from kilonerf import commands
from kilonerf.errors import KiloNerfError
from kilonerf.names import MODELS, PRESETS, PROCEDURAL_KINDS, SCENE_TYPES, STAGES, TEACHERS, WRITE_FORMATS
from kilonerf.runtime import reuse_freed_memory


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


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``kilonerf CMD: error: ...``) and exit code 2, like every other
    error of the command, instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")


def _add_nproc(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N", help=help)


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
    p.set_defaults(func=commands.cmd_demo)

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
    p.set_defaults(func=commands.cmd_convert)

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
    p.set_defaults(func=commands.cmd_procedural)

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
    p.set_defaults(func=commands.cmd_process)

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
    _add_nproc(p, "train with N local processes (torch.distributed; one per GPU on GPUs); "
               "across machines use torchrun -m kilonerf train (see README)")
    p.set_defaults(func=commands.cmd_train)

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
    p.add_argument("--backend", metavar="cpu|torch_ref|triton|triton_fp16",
                   help="tiny-MLP backend of the student (default: cpu, the compiled one, on the CPU, else torch_ref; "
                   "triton: the Triton kernels, for GPUs)")
    _add_device(p)
    _add_nproc(p, "render the views in N local processes (one per GPU on GPUs); rank 0 writes")
    p.set_defaults(func=commands.cmd_eval)

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
    _add_nproc(p, "render the frames in N local processes (one per GPU on GPUs); rank 0 writes")
    p.set_defaults(func=commands.cmd_render)

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
    p.set_defaults(func=commands.cmd_report)

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
    p.set_defaults(func=commands.cmd_view)

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
    p.add_argument("--backend", metavar="cpu|torch_ref|triton|triton_fp16",
                   help="KiloNeRF's backend (default: cpu on the CPU, torch_ref on a GPU; triton: the Triton kernels)")
    p.add_argument("--nerf-rays", type=int, default=128, help="rays per view timed for the NeRF row (default 128)")
    p.add_argument("--ess-rays", type=int, default=1024,
                   help="rays per view timed for the NeRF + ESS + ERT row (default 1024)")
    p.add_argument("--no-psnr", action="store_true", help="skip the PSNR comparison with the reference backend")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=commands.cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc N` starts N copies of it
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
