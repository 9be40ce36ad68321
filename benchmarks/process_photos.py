"""`kilonerf process` against known cameras: seconds per phase, registered images, pose errors.

    python benchmarks/process_photos.py [--views 100] [--size 800] [--kind unbounded|object]
        [--matching exhaustive|sequential] [--work DIR] [--json F]

Renders the procedural scene along an orbit (radius 4, elevation 30° +- 15°) as JPEG photos
with their EXIF focal length, runs `kilonerf process` on the photos alone, aligns the recovered
camera centres to the true ones with a similarity (Umeyama) and prints the median / max
rotation error (degrees) and position error (as % of the orbit radius 4). Timings depend on the
machine and its load: quote them with both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from kilonerf.capture.normalize import pose_errors
from kilonerf.capture.process import format_summary, process_capture
from kilonerf.capture.synthetic import ORBIT_RADIUS, render_capture
from kilonerf.errors import KiloNerfError
from kilonerf.io import atomic_write_json
from kilonerf.kernels.perf import machine_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--kind", default="unbounded", choices=("unbounded", "object"))
    ap.add_argument("--matching", choices=("exhaustive", "sequential"), default="exhaustive")
    ap.add_argument("--work", help="folder for the photos and the scene (default: a temp folder)")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="process_photos."))
    start = time.perf_counter()
    truth, _, _ = render_capture(work / "photos", args.views, args.size, kind=args.kind)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        result = process_capture(work / "photos", work / "scene", matching=args.matching, overwrite=True)
    except KiloNerfError as exc:
        raise SystemExit(f"{args.views} views at {args.size} px: process failed after "
                         f"{time.perf_counter() - start:.1f} s: {exc}") from None
    total_s = time.perf_counter() - start
    print(format_summary(result))
    rec = result.rec
    index = [int(name.split("_")[1].split(".")[0]) for name in rec.names]
    rot, pos, _ = pose_errors(rec.poses, truth[index])
    pos_pct = 100.0 * pos / ORBIT_RADIUS
    row = {
        "machine": machine_name(), "cpus": os.cpu_count(), "views": args.views, "size": args.size, "kind": args.kind,
        "matching": args.matching, "render_s": round(render_s, 1), "process_s": round(total_s, 1),
        "phase_s": {k: round(v, 1) for k, v in rec.seconds.items()}, "registered": rec.registered,
        "reprojection_px": round(rec.mean_error, 3), "points": len(rec.points),
        "rotation_deg": {"median": float(np.median(rot)), "max": float(rot.max())},
        "position_pct_of_radius": {"median": float(np.median(pos_pct)), "max": float(pos_pct.max())},
        "focal_px": {"estimated": float(rec.intrinsics[0]), "true": float(0.5 * args.size / np.tan(0.5 * 0.6911112070083618))},
    }  # fmt: skip
    print(f"\n{args.views} views at {args.size} px ({args.kind}, {args.matching}) on {row['machine']}, {row['cpus']} CPUs")
    print("  phases    " + ", ".join(f"{k} {v:.1f} s" for k, v in rec.seconds.items()) + f" (process total {total_s:.1f} s; "
          f"rendering the photos {render_s:.1f} s)")
    print(f"  registered {rec.registered} / {args.views}, reprojection {rec.mean_error:.3f} px, {len(rec.points)} points")
    print(f"  rotation error   median {np.median(rot):.3f}°, max {rot.max():.3f}°")
    print(f"  position error   median {np.median(pos_pct):.3f}%, max {pos_pct.max():.3f}% of the orbit radius "
          f"({ORBIT_RADIUS:g})")
    print(f"  focal            {rec.intrinsics[0]:.1f} px estimated, {row['focal_px']['true']:.1f} px true")
    if args.json:
        atomic_write_json(args.json, row)


if __name__ == "__main__":
    main()
