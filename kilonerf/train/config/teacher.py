"""The teachers' settings: the fast grid teacher and the paper's NeRF (with its presets)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from kilonerf.settings import Domain, Settings, pick_preset, setting
from kilonerf.train.config.loop import LoopConfig


@dataclass(frozen=True)
class FastTeacherConfig(Settings):
    """Fast teacher hyperparameters. The defaults are the ones measured in docs/benchmarks.md
    (lego at 100 px: the teacher's 3000 steps in 136 s on 2 CPU cores)."""

    total_steps: int = setting(3000, ge=1)
    """Steps, and the length of the learning-rate decay (lego_100 before the compiled training
    kernels: 2000 steps give 32.45 dB in 111 s, 3000 steps 32.67 dB in 173 s, 4000 steps 32.58 dB
    in 198 s; the student 32.42, 32.49 and 32.46 dB. With them the whole lego_100 pipeline takes
    3.2 min with 2000 steps (student 32.41 dB) and 4.0 min with 3000 (32.47 dB): docs/benchmarks.md)."""
    rays_per_step: int = setting(4096, ge=1)
    coarse_res: int = setting(48, ge=2)
    """Density and feature nodes on the longest axis while the scene box is in use."""
    res_schedule: tuple[tuple[int, int, int], ...] = setting(((200, 80, 80), (800, 128, 128)), kind="schedule",
                                                             row=(Domain(int, ge=0), Domain(int, ge=2), Domain(int, ge=2)))
    """(step, density nodes, feature nodes) on the longest axis; the first entry also shrinks
    the box to the occupied region."""
    feature_dim: int = setting(12, ge=1)
    hidden: int = setting(32, ge=1)
    dir_freqs: int = setting(4, ge=0)
    """Positional-encoding frequencies of the view direction fed to the MLP."""
    lr_grid: float = setting(0.1, gt=0)
    lr_mlp: float = setting(1e-3, gt=0)
    lr_final_factor: float = setting(0.1, gt=0, le=1)
    """Learning rates decay exponentially to this fraction at ``total_steps``."""
    step_ratio: float = setting(0.5, gt=0)
    """Ray-march step in density cells."""
    alpha_init: float = setting(1e-3, gt=0, lt=1)
    """Initial opacity of one coarse march step: free space starts (almost) empty and only
    grows density where the photos need it, so the occupancy grid has something to skip."""
    coarse_rays: int = setting(2048, ge=1)
    """Rays used per step before the box shrink (the first ones of the batch)."""
    occupancy_every: int = setting(100, ge=1)
    prune: bool = setting(True)
    """At each occupancy refresh, set nodes below the threshold to empty, so that the field's
    own density (what distillation sees) matches what training rendered."""
    occupancy_alpha: float = setting(1e-3, gt=0, lt=1)
    """A cell is empty when every corner's opacity over one march step is below this."""
    color_weight_threshold: float = setting(1e-3, ge=0, lt=1)
    """Colour (feature gather + MLP) only on samples whose weight exceeds this, after the
    coarse phase; the others render black."""
    ert_threshold: float = setting(0.0, ge=0, lt=1)
    """Renders drop the samples behind this transmittance along their camera ray (found by a
    first pass without gradients; 0: every marched sample is kept). Space behind surfaces
    that no camera sees (a 360° capture's ground) keeps its initial fog, which every ray that
    hits the surface would otherwise march and differentiate."""
    bbox_alpha: float = setting(1e-2, gt=0, lt=1)
    """Opacity over one coarse cell that counts as 'object' when shrinking the box."""
    bbox_margin_cells: float = setting(2.5, ge=0)
    sparsity_weight: float = setting(1e-3, ge=0)
    opacity_entropy_weight: float = setting(1e-2, ge=0)
    """Push each sample's opacity towards 0 or 1 (binary entropy): fewer semi-transparent
    floaters that fit the training views but not the others."""
    distortion_weight: float = setting(1e-2, ge=0)
    """Mip-NeRF 360 distortion loss (world units) after the coarse phase: compact weights."""
    tv_density: float = setting(0.0, ge=0)
    tv_features: float = setting(0.0, ge=0)
    """Total-variation weights (on the mean squared neighbour difference of each grid)."""
    random_background: bool = setting(False)
    """Train on photos re-composited onto a random colour per ray (where the scene has alpha),
    the model's remaining transmittance showing that colour too: a transparent surface whose
    colour matches the scene's background is then no longer free (instant-ngp does this for
    synthetic scenes). Validation and rendering keep the scene's background."""
    mask_weight: float = setting(1.0, ge=0)
    """Weight of the squared error between each ray's opacity and the photo's alpha (where the
    scene has alpha; 0 turns it off). Like ``random_background`` it keeps a surface whose colour
    matches the background from staying transparent (the procedural scene's near-white platform
    squares: occupancy recall 97.7% without it), and it also sharpens the silhouette (lego_100
    teacher, 4000 steps: 32.07 dB without, 32.35 at 0.1, 32.51 at 1; docs/benchmarks.md)."""
    z_cell_ratio: float = setting(1.0, gt=0)
    """Grid cells this many times longer along z than along x and y (as ``student.z_cell_ratio``;
    forward-facing scenes set it: their z is NDC depth, where the views resolve less detail
    than across the image)."""
    eval_chunk_rays: int = setting(8192, ge=1)
    retain_freed_memory: bool = setting(True)
    """Call :func:`kilonerf.runtime.reuse_freed_memory` when the trainer is built
    (process-wide, glibc only; without it page faults cost ~20% of a step)."""
    seed: int = setting(0, ge=0)


@dataclass(frozen=True)
class NeRFTeacherConfig(Settings):
    """Hyperparameters of the teacher; defaults are the paper's (the ``paper`` preset)."""

    SECTION = "teacher_params"

    num_samples: int = setting(384, ge=2)
    """Stratified samples per ray between the box entry and exit (no coarse/fine)."""
    rays_per_step: int = setting(1024, ge=1)
    lr: float = setting(5e-4, gt=0)
    lr_decay_rate: float = setting(0.1, gt=0, le=1)
    lr_decay_steps: int = setting(500_000, ge=1)
    """lr(step) = lr * lr_decay_rate ** (step / lr_decay_steps)."""
    iterations: int = setting(600_000, ge=1)
    precrop_steps: int = setting(10_000, ge=0)
    """For the first steps rays come only from the central crop of each image (Synthetic)."""
    precrop_frac: float = setting(0.5, gt=0, le=1)
    num_freqs_pos: int = setting(10, ge=0)
    num_freqs_dir: int = setting(4, ge=0)
    width: int = setting(256, ge=1)
    depth: int = setting(8, ge=6)
    """Trunk layers; the skip connection re-enters the position at layer 4 (as NeRF), so at least 6."""
    dir_width: int = setting(128, ge=1)
    init_density_scale: float = setting(1.0)
    """Initial density bias times the scene-box diagonal (see :class:`NeRFField`)."""
    eval_chunk_points: int = setting(1 << 20, ge=1)
    """Samples evaluated at once by :meth:`NeRFTeacherTrainer.render_rays`."""
    seed: int = setting(0, ge=0)
    """Seeds the weight initialisation and the stratified jitter."""

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "NeRFTeacherConfig":
        """``paper`` (the published setting) or ``cpu`` (tiny, only to exercise the code)."""
        return pick_preset(TEACHER_PRESETS, name, "teacher", **overrides)

    def loop_config(self, **overrides: Any) -> LoopConfig:
        """A :class:`LoopConfig` for this teacher: ``iterations`` steps, the paper's centre crop."""
        base = LoopConfig(max_steps=self.iterations, precrop_steps=self.precrop_steps, precrop_frac=self.precrop_frac)
        return replace(base, **overrides)


TEACHER_PRESETS: dict[str, NeRFTeacherConfig] = {
    "paper": NeRFTeacherConfig(),
    # Runs in minutes on a couple of CPU cores; the picture will be blurry.
    "cpu": NeRFTeacherConfig(
        num_samples=64,
        rays_per_step=256,
        iterations=300,
        lr_decay_steps=3_000,
        precrop_steps=50,
        width=128,
        dir_width=64,
        eval_chunk_points=1 << 16,
    ),
}
