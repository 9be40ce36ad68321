"""The run directory: where every stage reads its inputs and writes its outputs.

Layout (all files written atomically)::

    RUN/
      run.json                  format version, data folder, preset, resolved config
      teacher/checkpoint.pt     teacher model + optimiser + loop state (resumable)
      occupancy.npz             occupancy grid built from the teacher
      distill/checkpoint.pt     student during distillation (resumable)
      student_distilled.pt      student after distillation
      finetune/checkpoint.pt    student during fine-tuning (resumable)
      student.pt                the final student
      stages.json               per stage: steps, seconds, val PSNR, training history
      eval/<model>_<split>/     rendered images and metrics.json (``kilonerf eval``)
      video.mp4                 the usual ``kilonerf render --out`` (the report embeds it)
      summary.json              speed and quality summary (``kilonerf bench``)
      report.html, report/      the HTML report and its images (``kilonerf report``)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kilonerf import __version__
from kilonerf.errors import RunError
from kilonerf.io import atomic_write_json, read_json
from kilonerf.settings import SettingError
from kilonerf.train.config import PipelineConfig

RUN_FORMAT = 1
"""Bumped whenever the layout or checkpoint contents change incompatibly."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def meta_path(self) -> Path:
        return self.root / "run.json"

    def stage_checkpoint(self, stage: str) -> Path:
        return self.root / stage / "checkpoint.pt"

    @property
    def occupancy_path(self) -> Path:
        return self.root / "occupancy.npz"

    @property
    def distilled_path(self) -> Path:
        return self.root / "student_distilled.pt"

    @property
    def student_path(self) -> Path:
        return self.root / "student.pt"

    @property
    def stages_path(self) -> Path:
        """Per stage: steps, seconds, validation PSNR, training history."""
        return self.root / "stages.json"

    @property
    def summary_path(self) -> Path:
        """Speed and quality summary (``kilonerf demo``)."""
        return self.root / "summary.json"

    @property
    def video_path(self) -> Path:
        """The usual ``kilonerf render --out`` (the report embeds it)."""
        return self.root / "video.mp4"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    @property
    def eval_root(self) -> Path:
        return self.root / "eval"

    def eval_dir(self, model: str, split: str) -> Path:
        """Rendered images and ``metrics.json`` of ``kilonerf eval``."""
        return self.eval_root / f"{model}_{split}"

    def metrics_path(self, model: str, split: str) -> Path:
        return self.eval_dir(model, split) / "metrics.json"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def read_meta(self) -> dict[str, Any]:
        """run.json, checked to come from a compatible version."""
        if not self.root.is_dir():
            raise RunError(f"{self.root}: run directory not found")
        if not self.meta_path.is_file():
            raise RunError(f"{self.meta_path}: not a kilonerf run directory (run.json missing)")
        meta = read_json(self.meta_path)
        if not isinstance(meta, dict) or meta.get("run_format") != RUN_FORMAT:
            found = meta.get("run_format") if isinstance(meta, dict) else None
            raise RunError(
                f"{self.meta_path}: run format {found!r} from another kilonerf version "
                f"(this is {__version__}, format {RUN_FORMAT}); retrain into a new folder"
            )
        if not isinstance(meta.get("data"), str) or not isinstance(meta.get("config"), dict):
            raise RunError(f"{self.meta_path}: needs 'data' (the scene folder) and 'config' (the settings); "
                           "not written by `kilonerf train`")  # fmt: skip
        return meta

    def read_config(self) -> PipelineConfig:
        """The run's settings from run.json, every one checked against its domain."""
        try:
            return PipelineConfig.from_dict(self.read_meta()["config"])
        except SettingError as exc:
            raise RunError(f"{self.meta_path}: {exc}") from None

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.meta_path, {"run_format": RUN_FORMAT, "kilonerf_version": __version__, **meta})

    def require(self, path: Path, what: str, stage: str) -> Path:
        """``path`` if it exists, else a RunError telling which stage produces it."""
        if not path.is_file():
            raise RunError(f"{path}: {what} missing; run `kilonerf train DATA --out {self.root} --stage {stage}` first")
        return path
