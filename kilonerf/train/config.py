"""The pipeline's resolved configuration and its presets (``cpu`` and ``paper``).

Each stage's settings are kept as a plain dict (its dataclass' fields) so that ``run.json``
holds the whole resolved configuration and a resumed or re-run stage uses exactly the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from kilonerf.errors import KiloNerfError, RunError
from kilonerf.train.loop import LoopConfig

PRESETS = ("cpu", "paper")


@dataclass(frozen=True)
class OccupancyConfig:
    """How the occupancy grid is built from the teacher (paper: 16 x network grid, 3^3 samples
    per voxel including corners, sigma > 10 at the Synthetic reference step)."""

    resolution_factor: int = 16
    sigma_threshold: float = 10.0
    """Raw density threshold at the paper's reference step 0.0211 on Synthetic scenes; other
    scene scales use the same opacity over their own reference step (see render/occupancy.py)."""
    samples_per_axis: int = 3
    dilation: int = 0
    """Grow the occupied region by this many voxels (safety margin for thin structure)."""
    tight_box: bool = False
    """Shrink the student's box to the teacher's occupied region (plus ``box_margin``) before
    building the network grid: the cells then cover the object instead of empty space. The
    paper used the dataset's box as given."""
    box_margin: float = 0.03
    """Margin around the occupied region, as a fraction of the scene box's longest side."""
    coarse_resolution: int = 128
    """Voxels on the longest axis of the first, coarse occupancy pass used to find the box."""
    keep_unseen: bool = False
    """Also mark the voxels no training camera sees: those behind the teacher's surfaces (where
    its transmittance has dropped below 1/2) from every training view, such as object
    interiors and undersides. The photos carry no evidence that they are empty. Costs one
    depth render of every training image. The paper kept only the density threshold."""


@dataclass(frozen=True)
class StudentConfig:
    max_res: int = 16
    hidden: int = 32
    shared_init: bool = True
    backend: str = "torch_ref"


def config_from_dict(cls: type, d: dict[str, Any], what: str) -> Any:
    """``cls(**d)`` with unknown keys reported as a RunError (e.g. a run.json from elsewhere)."""
    known = {f.name for f in fields(cls)}
    extra = set(d) - known
    if extra:
        raise RunError(f"{what}: unknown keys {sorted(extra)}")
    return cls(**d)


def pick_preset(presets: dict[str, Any], name: str, what: str, **overrides: Any) -> Any:
    """``presets[name]`` with ``overrides`` applied; an unknown name is a RunError listing the known ones."""
    if name not in presets:
        raise RunError(f"unknown {what} preset '{name}' (have: {', '.join(presets)})")
    return replace(presets[name], **overrides)


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
    def from_dict(cls, d: dict[str, Any]) -> "PipelineConfig":
        return config_from_dict(cls, d, "run config")

    def loop(self, stage: str, **overrides: Any) -> LoopConfig:
        d = {"teacher": self.teacher_loop, "distill": self.distill_loop, "finetune": self.finetune_loop}[stage]
        return replace(config_from_dict(LoopConfig, d, f"{stage} loop"), **overrides)

    def occupancy_config(self) -> OccupancyConfig:
        return config_from_dict(OccupancyConfig, self.occupancy, "occupancy config")

    def student_config(self) -> StudentConfig:
        return config_from_dict(StudentConfig, self.student, "student config")


def _loop(**kw: Any) -> dict[str, Any]:
    return asdict(LoopConfig(**kw))


def resolve_config(preset: str = "cpu", teacher: str = "fast", no_distill: bool = False, seed: int = 0) -> PipelineConfig:
    """The full configuration of a preset: ``cpu`` (minutes on 2 CPU cores at 100 px) or
    ``paper`` (the published hyperparameters, for GPUs)."""
    from kilonerf.train.distill import DistillConfig
    from kilonerf.train.fast_teacher import FastTeacherConfig
    from kilonerf.train.finetune import FinetuneConfig
    from kilonerf.train.nerf_teacher import NeRFTeacherConfig

    if preset not in PRESETS:
        raise KiloNerfError(f"unknown preset '{preset}' (have: {', '.join(PRESETS)})")
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
        raise KiloNerfError(f"unknown teacher '{teacher}' (have: fast, nerf)")

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
