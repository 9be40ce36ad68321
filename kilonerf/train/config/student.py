"""The student's settings: its occupancy grid, its network grid, distillation and fine-tuning
(with their presets)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kilonerf.fields.multinet import DENSITY_ACTIVATIONS
from kilonerf.settings import Settings, pick_preset, setting

STUDENT_BACKENDS = ("auto", "cpu", "torch_ref")
"""Backends a student trains with: ``auto`` is the compiled ``cpu`` one on the CPU (its forward
and the parameters' gradients in C, fp32) and ``torch_ref`` elsewhere
(:func:`~kilonerf.kernels.default_render_backend`); the Triton ones are forward-only."""


@dataclass(frozen=True)
class OccupancyConfig(Settings):
    """How the occupancy grid is built from the teacher (paper: 16 x network grid, 3^3 samples
    per voxel including corners, sigma > 10 at the Synthetic reference step)."""

    SECTION = "occupancy"

    resolution_factor: int = setting(16, ge=1)
    sigma_threshold: float = setting(10.0, ge=0)
    """Raw density threshold at the paper's reference step 0.0211 on Synthetic scenes; other
    scene scales use the same opacity over their own reference step (see occupancy/grid.py)."""
    samples_per_axis: int = setting(3, ge=1)
    dilation: int = setting(0, ge=0)
    """Grow the occupied region by this many voxels (safety margin for thin structure)."""
    tight_box: bool = setting(False)
    """Shrink the student's box to the teacher's occupied region (plus ``box_margin``) before
    building the network grid: the cells then cover the object instead of empty space. The
    paper used the dataset's box as given."""
    box_margin: float = setting(0.03, ge=0)
    """Margin around the occupied region, as a fraction of the scene box's longest side."""
    coarse_resolution: int = setting(128, ge=2)
    """Voxels on the longest axis of the first, coarse occupancy pass used to find the box."""
    keep_unseen: bool = setting(False)
    """Also mark the voxels no training camera sees: those behind the teacher's surfaces (where
    its transmittance has dropped below 1/2) from every training view, such as object
    interiors and undersides. The photos carry no evidence that they are empty. Costs one
    depth render of every training image. The paper kept only the density threshold."""


@dataclass(frozen=True)
class StudentConfig(Settings):
    SECTION = "student"

    max_res: int = setting(16, ge=1)
    """Networks along the axis that gets the most."""
    z_cell_ratio: float = setting(1.0, gt=0)
    """Network cells this many times longer along z than along x and y (forward-facing scenes
    set it: their z is NDC depth, where the views resolve less than across the image)."""
    hidden: int = setting(32, ge=1)
    shared_init: bool = setting(True)
    backend: str = setting("auto", choices=STUDENT_BACKENDS)

    @property
    def cell_aspect(self) -> tuple[float, float, float]:
        return (1.0, 1.0, self.z_cell_ratio)


@dataclass(frozen=True)
class DistillConfig(Settings):
    """Distillation hyperparameters; defaults are the paper's (the ``paper`` preset)."""

    SECTION = "distill"

    iterations: int = setting(150_000, ge=1)
    points_per_net: int = setting(128, ge=1)
    nets_per_step: int = setting(0, ge=0)
    """Networks trained per step, round-robin over the trained ones; 0: all of them."""
    lr: float = setting(1e-3, gt=0)
    density_activation: str = setting("leaky_relu", choices=DENSITY_ACTIVATIONS)
    """Student density activation while distilling (the original's LeakyReLU)."""
    occupied_only: bool = setting(False)
    """Skip networks with no occupied voxel; draw ``occupied_fraction`` of points in occupied voxels."""
    occupied_fraction: float = setting(0.75, ge=0, le=1)
    occupancy_dilation: int = setting(1, ge=0)
    """Voxels the occupancy grid is dilated by for ``occupied_only`` (a margin around surfaces)."""
    chunk_points: int = setting(1 << 16, ge=1)
    """Points evaluated per forward/backward pass (bounds memory; gradients accumulate)."""
    eval_points_per_net: int = setting(20_000, ge=1)
    """Held-out points per network for :meth:`DistillTrainer.heldout_metrics`."""
    render_samples: int = setting(384, ge=2)
    render_chunk_rays: int = setting(1 << 14, ge=1)
    seed: int = setting(0, ge=0)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DistillConfig":
        """``paper`` (the published setting) or ``cpu`` (lego at 100 px on two cores)."""
        return pick_preset(DISTILL_PRESETS, name, "distill", **overrides)


DISTILL_PRESETS: dict[str, DistillConfig] = {
    "paper": DistillConfig(),
    # lego_100 on this 2-core machine (fast grid teacher, 928 of 1920 networks trained):
    # 600 steps at ~180 ms/step = 107 s; held-out per-network loss 0.077 -> 0.0008. 64 points
    # and lr 5e-3 beat 128 points and lr 3e-3 (same steps, 2.5x the time) after fine-tuning.
    "cpu": DistillConfig(
        iterations=600, points_per_net=64, lr=5e-3, occupied_only=True, eval_points_per_net=256,
        render_chunk_rays=1 << 13,
    ),
}


@dataclass(frozen=True)
class FinetuneConfig(Settings):
    """Fine-tuning hyperparameters; defaults are the paper's (the ``paper`` preset)."""

    SECTION = "finetune"

    iterations: int = setting(1_000_000, ge=1)
    rays_per_step: int = setting(8192, ge=1)
    num_samples: int = setting(384, ge=1)
    """Stratified training samples per ray between box entry and exit."""
    lr: float = setting(1e-3, gt=0)
    lr_decay_rate: float = setting(0.1, gt=0, le=1)
    lr_decay_steps: int = setting(500_000, ge=1)
    l2_weight: float = setting(1e-6, ge=0)
    render_samples: int = setting(384, ge=2)
    """Samples per ray (near to far, uniform) for validation renders."""
    render_chunk_rays: int = setting(1 << 14, ge=1)
    seed: int = setting(0, ge=0)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "FinetuneConfig":
        """``paper`` (the published setting) or ``cpu`` (lego at 100 px on two cores)."""
        return pick_preset(FINETUNE_PRESETS, name, "finetune", **overrides)


FINETUNE_PRESETS: dict[str, FinetuneConfig] = {
    "paper": FinetuneConfig(),
    "cpu": FinetuneConfig(
        # 1600 steps: with the mask-loss teacher (32.5 dB on lego_100) 800 left the student
        # 0.55 dB behind it, 1600 leave 0.06 (docs/benchmarks.md).
        iterations=1600, rays_per_step=1024, num_samples=192, lr_decay_steps=1600, render_chunk_rays=1 << 13,
    ),
}
