"""Compose docs/demo_views.png (the README's image) from a demo run's report images.

    python docs/readme_figure.py runs/demo [--views 3] [--out docs/demo_views.png]

One row per view: ground truth | teacher | KiloNeRF student | |error| heatmap, as written by
``kilonerf report`` into RUN/report/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kilonerf.data.images import read_image, write_png

COLUMNS = ("gt", "teacher", "student", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "demo_views.png")
    args = ap.parse_args()
    gap = 4
    rows = []
    for v in range(args.views):
        tiles = [read_image(args.run / "report" / f"view{v}_{c}.png")[..., :3] for c in COLUMNS]
        h = tiles[0].shape[0]
        spacer = np.full((h, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, spacer)][:-1], axis=1))
    width = rows[0].shape[1]
    spacer = np.full((gap, width, 3), 255, np.uint8)
    write_png(args.out, np.concatenate([x for r in rows for x in (r, spacer)][:-1], axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
