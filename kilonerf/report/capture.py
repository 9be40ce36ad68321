"""The capture figure of a run trained on a processed capture (``kilonerf process``): the
cameras and the sparse points, seen from above and from the side (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kilonerf.data.points import POINTS_FILE, read_points
from kilonerf.errors import KiloNerfError
from kilonerf.io import atomic_output, read_json

MAX_POINTS = 20_000
"""Points drawn at most (a random subset beyond): enough to show the structure, small PNGs."""


def capture_cameras(scene_dir: Path) -> np.ndarray:
    """(N, 4, 4) camera-to-world poses of ``scene_dir/transforms.json``."""
    meta = read_json(scene_dir / "transforms.json")
    return np.array([f["transform_matrix"] for f in meta.get("frames", [])], dtype=np.float64).reshape(-1, 4, 4)


def plot_capture(scene_dir: Path, out: Path) -> bool:
    """Draw the cameras (centres and viewing directions) and the sparse points of a processed
    capture into the PNG ``out``: top view (x, y) and side view (x, z). False (nothing
    written) when ``scene_dir`` has no ``points.ply`` or ``transforms.json``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not (scene_dir / POINTS_FILE).is_file() or not (scene_dir / "transforms.json").is_file():
        return False
    try:
        points, colors = read_points(scene_dir / POINTS_FILE)
        poses = capture_cameras(scene_dir)
    except (KiloNerfError, KeyError, TypeError, ValueError):
        return False  # a foreign or hand-edited file: the report shows a note instead
    if len(points) > MAX_POINTS:
        pick = np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False)
        points, colors = points[pick], colors[pick]
    centres, fwd = poses[:, :3, 3], -poses[:, :3, 2]
    reach = float(np.median(np.linalg.norm(centres - centres.mean(0), axis=1))) if len(centres) else 1.0
    # Frame the view on the cameras and the bulk of the points, not on stray far points.
    everything = np.concatenate([centres, points]) if len(points) else centres
    lo, hi = np.percentile(everything, [1, 99], axis=0) if len(everything) else (np.full(3, -1.0), np.full(3, 1.0))
    pad = 0.05 * (hi - lo).max() + 1e-6
    fig = Figure(figsize=(9.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (a, b), title in zip(fig.subplots(1, 2), ((0, 1), (0, 2)), ("top view (x, y)", "side view (x, z)")):
        ax.scatter(points[:, a], points[:, b], c=colors / 255.0, s=1.0, linewidths=0)
        ax.quiver(centres[:, a], centres[:, b], fwd[:, a], fwd[:, b], color="tab:blue", angles="xy", scale_units="xy",
                  scale=1.0 / (0.15 * reach), width=0.004)  # fmt: skip
        ax.plot(centres[:, a], centres[:, b], "o", color="tab:blue", ms=3, label=f"{len(centres)} cameras")
        ax.set_xlim(lo[a] - pad, hi[a] + pad)
        ax.set_ylim(lo[b] - pad, hi[b] + pad)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8, loc="upper right", title=f"{len(points)} sparse points", title_fontsize=8)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png")
    return True
