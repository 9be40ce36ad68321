"""The ``kilonerf`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from kilonerf.errors import KiloNerfError


def _cmd_convert(args: argparse.Namespace) -> int:
    from kilonerf.data.convert import convert_scene

    convert_scene(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    print(f"wrote {args.to} scene to {args.dst}")
    return 0


def _cmd_procedural(args: argparse.Namespace) -> int:
    from kilonerf.data.procedural import write_procedural_scene

    out = write_procedural_scene(
        args.out, size=args.size, n_train=args.train, n_val=args.val, n_test=args.test,
        seed=args.seed, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote the procedural scene ({args.train}/{args.val}/{args.test} views, {args.size} px) to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kilonerf",
        description="KiloNeRF: train a radiance field as thousands of tiny MLPs and render it fast.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "convert",
        help="write a scene (any supported format) in NSVF or Blender format",
        description="Load SRC (Blender, NSVF, LLFF or instant-ngp format, detected automatically) "
        "and write it to DST in the chosen format.",
    )
    p.add_argument("src", help="scene folder to read")
    p.add_argument("dst", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--to", choices=["nsvf", "blender"], required=True, help="output format")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "procedural",
        help="render the built-in procedural scene into a Blender-format folder",
        description="Ray-trace the built-in scene (textured solids, a glossy sphere, white background) "
        "into OUT with train/val/test splits. Deterministic from --seed; nothing is downloaded.",
    )
    p.add_argument("out", help="folder to write")
    p.add_argument("--size", type=int, default=100, help="image width and height in pixels (default 100)")
    p.add_argument("--train", type=int, default=100, help="training views (default 100)")
    p.add_argument("--val", type=int, default=20, help="validation views (default 20)")
    p.add_argument("--test", type=int, default=50, help="test views (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_procedural)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
