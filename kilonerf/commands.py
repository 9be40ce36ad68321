"""What each ``kilonerf`` subcommand does with its parsed arguments (the parser is in
``kilonerf/cli.py``). Heavy modules are imported inside each command so that ``--help`` stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from kilonerf.errors import KiloNerfError


def cmd_convert(args: argparse.Namespace) -> int:
    from kilonerf.data.convert import convert_scene
    from kilonerf.io import check_output_parent

    check_output_parent(args.dst, "DST", create=True)
    convert_scene(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    print(f"wrote {args.to} scene to {args.dst}")
    return 0


def cmd_procedural(args: argparse.Namespace) -> int:
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


def cmd_process(args: argparse.Namespace) -> int:
    from kilonerf.capture.process import format_summary, process_capture

    result = process_capture(args.input, args.out, matching=args.matching, max_images=args.max_images,
                             max_size=args.max_size, overwrite=args.overwrite)  # fmt: skip
    print(format_summary(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from kilonerf.run.pipeline import open_run, run_pipeline
    from kilonerf.train.distributed import close, init_from_env

    overrides = dict(_parse_setting(s) for s in args.set)
    if _launching(args):
        return _launch(args)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:  # rank 0 creates (or checks and reopens) the run before the others join: bad input stops it alone
        run, cfg, scene = open_run(args.data, args.out, args.preset, args.teacher, args.no_distill, overrides,
                                   args.scene_type, args.downscale, args.max_size)  # fmt: skip
    group, device = init_from_env(torch_device(args.device))  # returns once every rank has joined
    try:
        if main:
            print(f"run {run.root}: preset {cfg.preset}, teacher {cfg.teacher}, device {device}"
                  + (f", {group.world} processes" if group.active else ""))
        else:
            run, cfg, scene = open_run(args.data, args.out)
        run_pipeline(run, cfg, scene, device, [args.stage] if args.stage else None, group)
    finally:
        close(group)
    return 0


def _launching(args: argparse.Namespace) -> bool:
    """Whether this is the command line that starts ``--nproc N`` processes (not one of them)."""
    import os

    return args.nproc > 1 and "WORLD_SIZE" not in os.environ


def _launch(args: argparse.Namespace) -> int:
    """Run this command line (minus ``--nproc``) in ``args.nproc`` local processes."""
    import sys

    from kilonerf.train.distributed import launch_local

    return launch_local(args.nproc, [sys.executable, "-m", "kilonerf", *_without_nproc(args.argv)])


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N`` (what each started process runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    from kilonerf.demo import DemoConfig, run_demo

    overrides = dict(_parse_setting(s) for s in args.set)
    device = torch_device(args.device)
    run_demo(args.out, DemoConfig(size=args.size, overrides=overrides), device)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from kilonerf.evaluation import evaluate_split, format_table
    from kilonerf.io import atomic_write_json, check_output_file
    from kilonerf.run.models import default_model, load_renderer, load_run_scene
    from kilonerf.run.folder import RunDir

    from kilonerf.train.distributed import close, init_from_env

    if args.json:
        check_output_file(args.json, "--json")
    run = RunDir(Path(args.run))
    run.read_meta()
    if _launching(args):
        return _launch(args)
    group, device = init_from_env(torch_device(args.device))
    try:
        model = args.model or default_model(run)
        scene = load_run_scene(run, args.data)
        if args.split not in scene.splits:
            raise KiloNerfError(f"{scene.root}: no '{args.split}' split (has: {', '.join(scene.splits)})")
        render = load_renderer(run, model, scene, device, backend=args.backend)
        out_dir = run.eval_dir(model, args.split)
        info = {"model": model, "data": str(Path(scene.root or "").resolve())}
        result = evaluate_split(render, scene, args.split, out_dir, device, max_views=args.max_views, info=info,
                                group=group)  # fmt: skip
    finally:
        close(group)
    if group.is_main:
        print(format_table({model: result}))
        print(f"{result['views']} views of '{args.split}'; images and metrics.json in {out_dir}")
        if args.json:
            atomic_write_json(args.json, result)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from kilonerf.render_path import check_render_outputs, render_run
    from kilonerf.run.folder import RunDir
    from kilonerf.train.distributed import close, init_from_env

    if args.out is None and args.save_path is None:
        raise KiloNerfError("give --out (a .mp4 file or a folder) and/or --save-path FILE.json")
    if _launching(args):
        RunDir(Path(args.run)).read_meta()  # bad input: one line here, not one per process
        check_render_outputs(args.out, args.save_path, args.overwrite)
        return _launch(args)
    group, device = init_from_env(torch_device(args.device))
    try:
        path, model = render_run(
            args.run, args.path, args.out, model=args.model, width=args.resolution, frames=args.frames, fps=args.fps,
            device=device, data=args.data, save_path=args.save_path, overwrite=args.overwrite, group=group,
        )  # fmt: skip
    finally:
        close(group)
    if args.save_path and group.is_main:
        print(f"wrote the camera path ({len(path)} frames) to {args.save_path}")
    if args.out and group.is_main:
        print(f"rendered {len(path)} frames of {path.width} x {path.height} with the {model} to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kilonerf.report import write_report

    out = write_report(args.run, split=args.split, views=args.views, video=args.video)
    print(f"wrote {out} (open it in a browser; its images are in {out.parent / 'report'})")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
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


def cmd_bench(args: argparse.Namespace) -> int:
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
