"""Training curves: PSNR against training time, one panel per trained stage (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kilonerf.io import atomic_output

CURVE_STAGES = {
    "teacher": "PSNR vs photos (training rays)",
    "distill": "PSNR of point colours vs the teacher",
    "finetune": "PSNR vs photos (training rays)",
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stage_series(entry: dict[str, Any]) -> tuple[list[float], list[float], list[float], list[float]]:
    """(times, train PSNRs, val times, val PSNRs) from a stage's history records."""
    records = entry.get("history") if isinstance(entry, dict) else None
    # Records that are not numbers (a hand-edited or foreign stages.json) are left out, not fatal.
    history = [r for r in records if isinstance(r, dict) and _number(r.get("elapsed"))] if isinstance(records, list) else []
    train = [(float(r["elapsed"]), float(r["psnr"])) for r in history if _number(r.get("psnr"))]
    val = [(float(r["elapsed"]), float(r["val_psnr"])) for r in history if _number(r.get("val_psnr"))]
    return [t for t, _ in train], [p for _, p in train], [t for t, _ in val], [p for _, p in val]


def plot_training_curves(stages: dict[str, Any], out: Path) -> list[str]:
    """Draw every stage of RUN/stages.json that has a history into the PNG ``out``.

    Returns the stages drawn (none: nothing is written).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = [s for s in CURVE_STAGES if isinstance(stages.get(s), dict) and any(_stage_series(stages[s])[:2])]
    if not drawn:
        return []
    # The Figure API, not pyplot: no global backend switch and no GUI, whatever the caller set.
    fig = Figure(figsize=(4.2 * len(drawn), 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for ax, stage in zip(fig.subplots(1, len(drawn), squeeze=False)[0], drawn):
        t, p, vt, vp = _stage_series(stages[stage])
        minutes = max(t + vt, default=0.0) > 180.0
        scale, unit = (1 / 60.0, "min") if minutes else (1.0, "s")
        # Markers when the points are few, or a one-record stage would draw nothing.
        marker = "." if len(t) < 30 else None
        ax.plot([x * scale for x in t], p, color="tab:blue", lw=1.2, marker=marker, label="training batches")
        if vp:
            ax.plot([x * scale for x in vt], vp, "o-", color="tab:orange", ms=4, lw=1, label="val images")
        ax.set_title(f"{stage}: {CURVE_STAGES[stage]}", fontsize=9)
        ax.set_xlabel(f"training time ({unit})")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png")
    return drawn
