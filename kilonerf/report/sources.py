"""What a report shows, read from the run directory; absent pieces come back as None / empty."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kilonerf.errors import RunError
from kilonerf.io import read_json
from kilonerf.names import MODELS
from kilonerf.run.folder import RunDir

SPLIT_PREFERENCE = ("test", "val", "train")


@dataclass
class ReportInputs:
    run: RunDir
    meta: dict[str, Any]
    """run.json."""
    split: str | None
    """The evaluated split shown (None: nothing evaluated yet)."""
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Model -> its eval ``metrics.json`` for ``split`` (teacher before student)."""
    stages: dict[str, Any] | None = None
    """RUN/stages.json."""
    summary: dict[str, Any] | None = None
    """RUN/summary.json (written by the benchmark)."""
    video: Path | None = None


def evaluated_splits(run: RunDir) -> list[str]:
    """Splits with at least one model's ``metrics.json`` under RUN/eval/, preferred first."""
    found = {
        p.parent.name.split("_", 1)[1]
        for p in run.eval_root.glob("*_*/metrics.json")
        if p.parent.name.split("_", 1)[0] in MODELS
    }
    return [s for s in SPLIT_PREFERENCE if s in found] + sorted(found - set(SPLIT_PREFERENCE))


def _optional_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, None when the file is absent."""
    if not path.is_file():
        return None
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _is_eval(metrics: dict[str, Any]) -> bool:
    images = metrics.get("images")
    return isinstance(images, list) and all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("psnr"), (int, float))
        for r in images
    )


def gather(run: RunDir, split: str | None = None, video: str | Path | None = None) -> ReportInputs:
    """Everything the report needs. ``split`` defaults to the first of test / val / train that
    has been evaluated; ``video`` to RUN/video.mp4 when it exists."""
    meta = run.read_meta()
    if split is None:
        splits = evaluated_splits(run)
        split = splits[0] if splits else None
    evals = {}
    if split is not None:
        for model in MODELS:
            path = run.metrics_path(model, split)
            metrics = _optional_json(path)
            if metrics is not None and not _is_eval(metrics):
                raise RunError(f"{path}: not an evaluation written by `kilonerf eval` "
                               "(needs an 'images' list of objects with a 'name' and a numeric 'psnr')")
            if metrics is not None:
                evals[model] = metrics
    if video is not None:
        video = Path(video)
        if not video.is_file():
            raise RunError(f"{video}: video file not found")
    elif run.video_path.is_file():
        video = run.video_path
    return ReportInputs(
        run=run, meta=meta, split=split, evals=evals, stages=_optional_json(run.stages_path),
        summary=_optional_json(run.summary_path), video=video,
    )  # fmt: skip
