"""Stage 2: the occupancy grid (and the student's box) from the trained teacher."""

from __future__ import annotations

import torch

from kilonerf.data.scene import Scene
from kilonerf.fields.base import RadianceField
from kilonerf.fields.network_grid import grid_resolution
from kilonerf.render.occupancy import (
    PAPER_REF_STEP,
    OccupancyGrid,
    alpha_from_sigma,
    build_occupancy,
    default_resolution,
    reference_step,
)
from kilonerf.train.config import OccupancyConfig, StudentConfig


def student_box(field: RadianceField, scene: Scene, cfg: OccupancyConfig, device: torch.device) -> torch.Tensor:
    """(2, 3) box for the student: the scene's, or with ``tight_box`` the teacher's occupied
    region (from a coarse occupancy pass) plus a margin, clipped to the scene's box."""
    box = torch.as_tensor(scene.bbox, dtype=torch.float32)
    if not cfg.tight_box:
        return box
    extent = box[1] - box[0]
    res = tuple(max(1, round(cfg.coarse_resolution * float(e) / float(extent.max()))) for e in extent)
    threshold = alpha_from_sigma(cfg.sigma_threshold, PAPER_REF_STEP)
    coarse = build_occupancy(field, box, res, threshold, ref_step=reference_step(scene.near, scene.far), device=device)
    bounds = coarse.occupied_bounds()
    if bounds is None:
        return box
    margin = cfg.box_margin * float(extent.max())
    lo = torch.maximum(bounds[0].cpu() - margin, box[0])
    hi = torch.minimum(bounds[1].cpu() + margin, box[1])
    return torch.stack([lo, hi])


def build_student_occupancy(
    field: RadianceField, scene: Scene, cfg: OccupancyConfig, student: StudentConfig, device: torch.device
) -> OccupancyGrid:
    """The paper's occupancy grid over the student's box: ``resolution_factor`` x the network
    grid per axis, ``samples_per_axis``^3 samples per voxel, then ``dilation``."""
    box = student_box(field, scene, cfg, device)
    res = default_resolution(grid_resolution(box, student.max_res), cfg.resolution_factor)
    threshold = alpha_from_sigma(cfg.sigma_threshold, PAPER_REF_STEP)
    grid = build_occupancy(
        field, box, res, threshold, ref_step=reference_step(scene.near, scene.far),
        samples_per_axis=cfg.samples_per_axis, device=device,
    )  # fmt: skip
    return grid.dilate(cfg.dilation) if cfg.dilation > 0 else grid
