"""Every setting of a run in one home: the stage configs with their presets (``teacher``,
``student``: occupancy, network grid, distillation, fine-tuning), the training loop's
(``loop``), and the pipeline's resolved configuration over them all (``pipeline``). Each field
declares its domain beside its default (:mod:`kilonerf.settings`)."""

from kilonerf.train.config.loop import LoopConfig
from kilonerf.train.config.pipeline import SECTIONS, PipelineConfig, resolve_config, scene_type_settings, teacher_config_class
from kilonerf.train.config.student import (
    DISTILL_PRESETS, FINETUNE_PRESETS, STUDENT_BACKENDS, DistillConfig, FinetuneConfig, OccupancyConfig, StudentConfig,
)  # fmt: skip
from kilonerf.train.config.teacher import TEACHER_PRESETS, FastTeacherConfig, NeRFTeacherConfig

__all__ = [
    "DISTILL_PRESETS", "FINETUNE_PRESETS", "SECTIONS", "STUDENT_BACKENDS", "TEACHER_PRESETS", "DistillConfig",
    "FastTeacherConfig", "FinetuneConfig", "LoopConfig", "NeRFTeacherConfig", "OccupancyConfig", "PipelineConfig",
    "StudentConfig", "resolve_config", "scene_type_settings", "teacher_config_class",
]  # fmt: skip
