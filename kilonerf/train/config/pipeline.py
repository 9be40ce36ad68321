"""The pipeline's resolved configuration and its presets (``cpu`` and ``paper``).

Each stage's settings are kept as a plain dict (its dataclass' fields) so that ``run.json``
holds the whole resolved configuration and a resumed or re-run stage uses exactly the same.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from kilonerf.names import PRESETS, TEACHERS
from kilonerf.settings import Domain, SettingError, Settings
from kilonerf.train.config.loop import LoopConfig
from kilonerf.train.config.student import DistillConfig, FinetuneConfig, OccupancyConfig, StudentConfig
from kilonerf.train.config.teacher import FastTeacherConfig, NeRFTeacherConfig


@dataclass
class PipelineConfig:
    preset: str
    teacher: str
    teacher_params: dict[str, Any]
    teacher_loop: dict[str, Any]
    occupancy: dict[str, Any]
    student: dict[str, Any]
    distill: dict[str, Any]
    distill_loop: dict[str, Any]
    finetune: dict[str, Any]
    finetune_loop: dict[str, Any]
    no_distill: bool = False
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "PipelineConfig":
        """The configuration a ``run.json`` holds, every setting checked (SettingError otherwise)."""
        if not isinstance(d, dict):
            raise SettingError(f"the run's config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        missing = sorted(f.name for f in fields(cls) if f.name not in d and f.default is MISSING
                         and f.default_factory is MISSING)  # fmt: skip
        if extra or missing:
            raise SettingError(f"run config: unknown keys {extra}, missing keys {missing}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def section_class(self, section: str) -> type[Settings]:
        """The config class whose fields the dict ``section`` holds."""
        if section not in SECTIONS:
            raise SettingError(f"unknown settings section '{section}' (have: {', '.join(SECTIONS)})")
        if section == "teacher_params":
            return teacher_config_class(self.teacher)
        return SECTIONS[section]

    def validate(self) -> None:
        """Check every setting against its declared domain; SettingError naming the first bad one."""
        for name, domain in TOP_LEVEL.items():
            try:
                domain.check(getattr(self, name))
            except ValueError:
                value = getattr(self, name)
                raise SettingError(f"setting '{name}' must be {domain.describe()}, got {value!r}") from None
        if not isinstance(self.extra, dict):
            raise SettingError(f"setting 'extra' must be a mapping, got {self.extra!r}")
        for section in SECTIONS:
            self.section_class(section).from_dict(getattr(self, section), section)

    def apply(self, key: str, text: str) -> None:
        """Set ``SECTION.NAME`` from its command-line text (``--set``), checked against its domain."""
        section, _, name = key.partition(".")
        values = getattr(self, section, None) if section in SECTIONS else None
        if not isinstance(values, dict):
            raise SettingError(f"unknown setting '{key}' (sections: {', '.join(SECTIONS)})")
        values[name] = self.section_class(section).parse(name, text, section)

    def loop(self, stage: str, **overrides: Any) -> LoopConfig:
        section = f"{stage}_loop"
        return replace(LoopConfig.from_dict(getattr(self, section), section), **overrides)

    def occupancy_config(self) -> OccupancyConfig:
        return OccupancyConfig.from_dict(self.occupancy, "occupancy")

    def student_config(self) -> StudentConfig:
        return StudentConfig.from_dict(self.student, "student")


TOP_LEVEL: dict[str, Domain] = {
    "preset": Domain(str, choices=PRESETS), "teacher": Domain(str, choices=TEACHERS), "no_distill": Domain(bool),
    "seed": Domain(int, ge=0),
}  # fmt: skip
"""The plain (non-section) settings of :class:`PipelineConfig` and their domains."""

SECTIONS: dict[str, type[Settings]] = {
    "teacher_params": FastTeacherConfig, "teacher_loop": LoopConfig, "occupancy": OccupancyConfig,
    "student": StudentConfig, "distill": DistillConfig, "distill_loop": LoopConfig, "finetune": FinetuneConfig,
    "finetune_loop": LoopConfig,
}  # fmt: skip
"""The dict sections of :class:`PipelineConfig` (``--set SECTION.NAME=VALUE``) and their config
classes (``teacher_params``: the one of the run's teacher, see :func:`teacher_config_class`)."""


def teacher_config_class(teacher: str) -> type[Settings]:
    """The config class of ``teacher_params`` for a teacher kind."""
    if teacher not in TEACHERS:
        raise SettingError(f"unknown teacher '{teacher}' (have: {', '.join(TEACHERS)})")
    return FastTeacherConfig if teacher == "fast" else NeRFTeacherConfig


def _loop(**kw: Any) -> dict[str, Any]:
    return asdict(LoopConfig(**kw))


FORWARD_SETTINGS = {
    "student.max_res": 40,
    "student.z_cell_ratio": 4.0,
    "finetune.render_samples": 112,
    "distill.render_samples": 112,
}
"""Forward-facing scenes over any preset (fern at 504 x 378: docs/benchmarks.md): the tiny
networks finer across the image (about 13 pixels each there) and coarser along NDC depth
(fern's student: 32 networks across 23.27 dB, 40 across 23.55 dB for ~2.2 min more); renders
with 112 samples from the near plane to infinity instead of 384 (-0.06 dB, a third of the
frame time)."""
FORWARD_CPU = {
    "finetune.iterations": 2400,
    "finetune.lr_decay_steps": 2400,
    "finetune_loop.max_steps": 2400,
}
"""The same over the ``cpu`` preset: fine-tuning 2400 steps instead of 1600 (fern: +0.15 dB for
~2 min; the ``paper`` preset keeps its own schedule)."""
FORWARD_FAST_TEACHER = {
    "teacher_params.z_cell_ratio": 3.0,
    "teacher_params.res_schedule": [[200, 80, 80], [800, 256, 256]],
}
"""The same for the fast teacher's grids (fern: features 256 nodes across instead of 160 gave
the teacher 23.72 -> 23.91 dB and the student 23.20 -> 23.27 dB for 78 s more; docs/benchmarks.md)."""
UNBOUNDED_SETTINGS = {
    "student.max_res": 24,
    "finetune.num_samples": 96,
}
"""360° scenes over any preset: the foreground cube is half of contracted space per axis, so
more networks per axis (12 over the foreground cube instead of 8); fine-tuning samples each
piece of a ray (3 to 5 of them) with 96 bins."""
UNBOUNDED_FAST_TEACHER = {
    "teacher_params.res_schedule": [[200, 64, 64], [800, 160, 128]],
    "teacher_params.step_ratio": 1.0,
    "teacher_params.ert_threshold": 1e-3,
}
"""The same for the fast teacher: every ray crosses most of contracted space (the sky is on
its outer faces), so the march steps a whole cell and stops behind surfaces; 160 cells across
(80 over the foreground cube). Both types train the teacher's default 3000 steps (ub_200, 2
cores: 0.17 to 0.31 s a step), which they set themselves while the default was 2000."""


def scene_type_settings(scene_type: str, teacher: str, preset: str = "cpu") -> dict[str, Any]:
    """``SECTION.NAME`` -> value defaults that a scene type sets over the preset's (``--set``
    still wins)."""
    fast = teacher == "fast"
    if scene_type == "forward":
        cpu = FORWARD_CPU if preset == "cpu" else {}
        return {**FORWARD_SETTINGS, **cpu, **(FORWARD_FAST_TEACHER if fast else {})}
    if scene_type == "unbounded":
        return {**UNBOUNDED_SETTINGS, **(UNBOUNDED_FAST_TEACHER if fast else {})}
    return {}


def resolve_config(preset: str = "cpu", teacher: str = "fast", no_distill: bool = False, seed: int = 0) -> PipelineConfig:
    """The full configuration of a preset: ``cpu`` (minutes on 2 CPU cores at 100 px) or
    ``paper`` (the published hyperparameters, for GPUs)."""
    if preset not in PRESETS:
        raise SettingError(f"unknown preset '{preset}' (have: {', '.join(PRESETS)})")
    if teacher == "fast":
        # random_background stays off: like the default mask loss it lifts the procedural
        # scene's occupancy recall above 99.9%, but it costs lego_100 ~0.8 dB (docs/benchmarks.md).
        tcfg = replace(FastTeacherConfig(), seed=seed)
        teacher_params = asdict(tcfg)
        teacher_loop = _loop(max_steps=tcfg.total_steps, val_every=1000, val_views=4, ckpt_every=500, log_every=50, seed=seed)
    elif teacher == "nerf":
        ncfg = NeRFTeacherConfig.preset(preset, seed=seed)
        teacher_params = asdict(ncfg)
        teacher_loop = asdict(
            ncfg.loop_config(val_every=max(ncfg.iterations // 20, 100), val_views=4,
                             ckpt_every=max(min(ncfg.iterations // 10, 10_000), 50), log_every=50, seed=seed)
        )  # fmt: skip
    else:
        raise SettingError(f"unknown teacher '{teacher}' (have: {', '.join(TEACHERS)})")

    dcfg = DistillConfig.preset(preset)
    fcfg = FinetuneConfig.preset(preset)
    if preset == "paper":
        occupancy = OccupancyConfig()
        distill_loop = _loop(max_steps=dcfg.iterations, val_every=10_000, val_views=4, ckpt_every=5_000, log_every=100, seed=seed)
        finetune_loop = _loop(max_steps=fcfg.iterations, val_every=20_000, val_views=4, ckpt_every=10_000, log_every=100, seed=seed)
    else:
        # The fast grid teacher's densities are soft (~15 inside the object): sigma > 10 drops most
        # of it (teacher 30.9 -> 17.8 dB when rendered through such a grid); 0.3 keeps 30.9 dB.
        occupancy = OccupancyConfig(dilation=1, tight_box=True, keep_unseen=True,
                                    sigma_threshold=0.3 if teacher == "fast" else 10.0)
        distill_loop = _loop(max_steps=dcfg.iterations, val_every=0, val_views=4, ckpt_every=200, log_every=20, seed=seed)
        finetune_loop = _loop(max_steps=fcfg.iterations, val_every=500, val_views=4, ckpt_every=250, log_every=25, seed=seed)
    return PipelineConfig(
        preset=preset,
        teacher=teacher,
        teacher_params=teacher_params,
        teacher_loop=teacher_loop,
        occupancy=asdict(occupancy),
        student=asdict(StudentConfig()),
        distill=asdict(dcfg),
        distill_loop=distill_loop,
        finetune=asdict(fcfg),
        finetune_loop=finetune_loop,
        no_distill=no_distill,
        seed=seed,
    )
