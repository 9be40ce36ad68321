"""Photos beside the renders of two or more runs of one scene, one row per view (e.g. the
360° procedural scene as ``unbounded`` against the same scene forced to ``object``).

    python benchmarks/side_by_side.py RUN_A RUN_B --split test --views 0 17 34 --out figure.png

Each run must have been evaluated on the split (``kilonerf eval`` or ``benchmarks/pipeline.py``
write ``RUN/eval/MODEL_SPLIT/`` with its ``metrics.json``); ``--views`` are positions in the split. Columns: the photo, then each run's render,
headed by the run's name, its scene type and its PSNR on the split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kilonerf.run.folder import RunDir
from kilonerf.run.models import load_run_scene

HEADER = 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default="student")
    ap.add_argument("--views", type=int, nargs="+", default=[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = [RunDir(Path(r)) for r in args.runs]
    scene = load_run_scene(runs[0], splits=[args.split])
    columns: list[tuple[str, list[np.ndarray]]] = [("photo", [scene.images[int(scene.indices(args.split)[v])] for v in args.views])]
    for run in runs:
        folder = run.eval_dir(args.model, args.split)
        metrics = json.loads((folder / "metrics.json").read_text())
        psnr = metrics.get("psnr")
        kind = run.read_meta().get("scene_type", "object")
        label = f"{run.root.name} ({kind}) {psnr:.2f} dB" if isinstance(psnr, (int, float)) else f"{run.root.name} ({kind})"
        names = [metrics["images"][v]["name"] for v in args.views]  # the v-th view of the split
        columns.append((label, [np.asarray(Image.open(folder / f"{name}.png").convert("RGB")) for name in names]))
    h, w = columns[0][1][0].shape[:2]
    canvas = Image.new("RGB", (w * len(columns), HEADER + h * len(args.views)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (label, images) in enumerate(columns):
        draw.text((c * w + 3, 2), label, fill="black")
        for r, image in enumerate(images):
            canvas.paste(Image.fromarray(image), (c * w, HEADER + r * h))
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
