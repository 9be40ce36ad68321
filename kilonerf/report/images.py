"""The side-by-side views: ground truth, each model's render and the student's error heatmap."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kilonerf.data.images import read_image, to_uint8, write_png
from kilonerf.data.load import load_scene
from kilonerf.errors import KiloNerfError
from kilonerf.run.models import run_scene_path
from kilonerf.report.sources import ReportInputs

ERROR_MAX = 0.1
"""Error (mean absolute over RGB, colours in [0, 1]) at the top of the heatmap's scale."""
COLORMAP = "inferno"


@dataclass
class ViewRow:
    name: str
    cells: dict[str, str] = field(default_factory=dict)
    """Column ("ground truth", model names, "error") -> image path relative to the assets folder."""
    psnr: dict[str, float] = field(default_factory=dict)
    """Model -> this view's PSNR."""


def pick_views(evals: dict[str, dict[str, Any]], count: int) -> list[str]:
    """Up to ``count`` image names evaluated by every model, spread evenly over the split."""
    if not evals or count < 1:
        return []
    name_lists = [[str(row["name"]) for row in e["images"]] for e in evals.values()]
    common = [n for n in name_lists[0] if all(n in other for other in name_lists[1:])]
    if len(common) <= count:
        return common
    return [common[int(i)] for i in np.linspace(0, len(common) - 1, count).round().astype(int)]


def ground_truth(inputs: ReportInputs, names: list[str]) -> tuple[dict[str, np.ndarray], str | None]:
    """Name -> (H, W, 3) uint8 photo for ``names``, from the scene folder the evaluation used;
    on failure an empty dict and the reason (the report then shows a note instead)."""
    if not names or inputs.split is None:
        return {}, None
    recorded = [e.get("data") for e in inputs.evals.values() if e.get("data")]
    data = Path(recorded[0]) if recorded else run_scene_path(inputs.run)
    try:
        scene = load_scene(data, splits=[inputs.split])
    except KiloNerfError as exc:
        return {}, f"ground truth not shown: {exc}"
    by_name = {scene.image_names[int(i)]: scene.images[int(i)] for i in scene.indices(inputs.split)}
    missing = [n for n in names if n not in by_name]
    if missing:
        return {}, f"ground truth not shown: {data} has no '{inputs.split}' image named {missing[0]}"
    return {n: by_name[n] for n in names}, None


def error_heatmap(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colour map of mean |pred - gt| over RGB, 0 -> black, ERROR_MAX -> yellow.

    Args:
        pred, gt: (H, W, 3) uint8.
    """
    err = np.abs(pred.astype(np.float32) - gt.astype(np.float32)).mean(axis=-1) / 255.0
    return colorize(np.clip(err / ERROR_MAX, 0.0, 1.0))


def colorize(values: np.ndarray) -> np.ndarray:
    """(...) floats in [0, 1] -> (..., 3) uint8 through the heatmap's colour map."""
    from matplotlib import colormaps

    rgba = colormaps[COLORMAP](values)
    return to_uint8(rgba[..., :3])


def write_views(inputs: ReportInputs, names: list[str], assets: Path) -> tuple[list[ViewRow], list[str]]:
    """Write each view's images into ``assets`` (PNG); returns the rows and notes on what is
    missing. The heatmap is the student's error, else the teacher's."""
    gts, note = ground_truth(inputs, names)
    notes = [note] if note else []
    rows = []
    for k, name in enumerate(names):
        row = ViewRow(name)
        if name in gts:
            row.cells["ground truth"] = f"view{k}_gt.png"
            write_png(assets / row.cells["ground truth"], gts[name])
        renders = {}
        for model, metrics in inputs.evals.items():
            src = inputs.run.eval_dir(model, str(inputs.split)) / f"{name}.png"
            if not src.is_file():
                notes.append(f"{src} is missing; re-run `kilonerf eval`")
                continue
            renders[model] = read_image(src)[..., :3]
            row.cells[model] = f"view{k}_{model}.png"
            write_png(assets / row.cells[model], renders[model])
            row.psnr[model] = next(float(r["psnr"]) for r in metrics["images"] if str(r["name"]) == name)
        shown = next((m for m in ("student", "teacher") if m in renders), None)
        if name in gts and shown is not None and renders[shown].shape == gts[name].shape:
            row.cells["error"] = f"view{k}_error.png"
            write_png(assets / row.cells["error"], error_heatmap(renders[shown], gts[name]))
        rows.append(row)
    if rows:
        write_png(assets / "error_scale.png", np.repeat(colorize(np.linspace(0, 1, 256))[None], 12, axis=0))
    return rows, notes
