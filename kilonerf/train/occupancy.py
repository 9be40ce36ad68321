"""Stage 2: the occupancy grid (and the student's box) from the trained teacher."""

from __future__ import annotations

import torch
from tqdm import tqdm

from kilonerf.data.cameras import ray_box_intersect
from kilonerf.data.rays import RayTable
from kilonerf.data.scene import Scene
from kilonerf.fields.base import RadianceField
from kilonerf.fields.network_grid import grid_resolution
from kilonerf.occupancy.carving import opaque_depth, unseen_voxels
from kilonerf.occupancy.build import build_occupancy
from kilonerf.occupancy.grid import PAPER_REF_STEP, OccupancyGrid, alpha_from_sigma, default_resolution, reference_step
from kilonerf.train.config import OccupancyConfig, StudentConfig
from kilonerf.train.distributed import SINGLE, Group


def build_split(group: Group, field: RadianceField, box: torch.Tensor, res: tuple[int, int, int], threshold: float,
                **kwargs: object) -> OccupancyGrid:  # fmt: skip
    """:func:`build_occupancy` with its slabs split across the ranks of ``group`` and the
    parts combined in one all-reduce (the same grid on every rank)."""
    if not group.active:
        return build_occupancy(field, box, res, threshold, **kwargs)  # type: ignore[arg-type]
    part = build_occupancy(field, box, res, threshold, part=(group.rank, group.world), **kwargs)  # type: ignore
    dense = part.to_dense().to(torch.uint8).to(group.device())
    return OccupancyGrid.from_dense(group.all_reduce(dense, op="max").cpu().bool(), part.bbox)


def student_box(field: RadianceField, scene: Scene, cfg: OccupancyConfig, device: torch.device,
                group: Group = SINGLE) -> torch.Tensor:  # fmt: skip
    """(2, 3) box for the student: the scene's, or with ``tight_box`` the teacher's occupied
    region (from a coarse occupancy pass) plus a margin, clipped to the scene's box."""
    box = torch.as_tensor(scene.bbox, dtype=torch.float32)
    if not cfg.tight_box:
        return box
    extent = box[1] - box[0]
    res = tuple(max(1, round(cfg.coarse_resolution * float(e) / float(extent.max()))) for e in extent)
    threshold = alpha_from_sigma(cfg.sigma_threshold, PAPER_REF_STEP)
    coarse = build_split(group, field, box, res, threshold, ref_step=reference_step(scene.near, scene.far),
                         device=device, progress=group.is_main)  # fmt: skip
    bounds = coarse.occupied_bounds()
    if bounds is None:
        return box
    margin = cfg.box_margin * float(extent.max())
    lo = torch.maximum(bounds[0].cpu() - margin, box[0])
    hi = torch.minimum(bounds[1].cpu() + margin, box[1])
    return torch.stack([lo, hi])


def build_student_occupancy(
    field: RadianceField, scene: Scene, cfg: OccupancyConfig, student: StudentConfig, device: torch.device,
    group: Group = SINGLE,
) -> OccupancyGrid:
    """The paper's occupancy grid over the student's box: ``resolution_factor`` x the network
    grid per axis, ``samples_per_axis``^3 samples per voxel, then ``dilation``. With several
    ranks (``group``) the density lattice is split across them; the voxels no camera sees
    (``keep_unseen``) are then added by rank 0 alone, whose grid is the one to save."""
    box = student_box(field, scene, cfg, device, group)
    res = default_resolution(grid_resolution(box, student.max_res, student.cell_aspect), cfg.resolution_factor)
    threshold = alpha_from_sigma(cfg.sigma_threshold, PAPER_REF_STEP)
    grid = build_split(
        group, field, box, res, threshold, ref_step=reference_step(scene.near, scene.far),
        samples_per_axis=cfg.samples_per_axis, device=device, progress=group.is_main,
    )  # fmt: skip
    grid = grid.dilate(cfg.dilation) if cfg.dilation > 0 else grid
    reachable = scene.ray_map.voxel_mask(box, res) if scene.ray_map is not None else None
    if reachable is not None:
        # Space no ray reaches (the empty corners of contracted space) never got a gradient:
        # the teacher's initial density there must not make networks to distill.
        grid = OccupancyGrid.from_dense(grid.to_dense().cpu() & reachable, grid.bbox)
    # Carving compares world distances with the cameras' depth maps, which a mapped scene
    # type does not have; forward-facing novel views stay near the cameras, which see what
    # the teacher marked, so there are no hidden regions for them to reveal.
    unseen = cfg.keep_unseen and scene.ray_map is None and group.is_main
    return add_unseen(grid, field, scene, device) if unseen else grid


def training_depths(field: RadianceField, scene: Scene, box: torch.Tensor, step: float, device: torch.device) -> list[torch.Tensor]:
    """One (H, W) depth map per training image: where the ray's transmittance through
    ``field`` drops below 1/2 (:func:`opaque_depth`) inside ``box`` (2, 3); inf where the ray
    leaves the box unstopped, the far plane where the far plane cut it off (nothing was
    observed beyond it)."""
    table = RayTable(scene, "train", device=device)
    depths = []
    for k, (h, w) in enumerate(tqdm(table.sizes, desc="depth maps", unit="image")):
        origins, dirs, _ = table.image(k)
        t0, t1, hit = ray_box_intersect(origins, dirs, box.to(device))
        near = t0.clamp_min(scene.near)
        far = torch.where(hit, t1.clamp_max(scene.far), near)
        depth = opaque_depth(field, origins, dirs, near, far, step)
        cut = torch.isinf(depth) & hit & (t1 > scene.far)
        depths.append(torch.where(cut, torch.full_like(depth, scene.far), depth).reshape(h, w))
    return depths


def add_unseen(grid: OccupancyGrid, field: RadianceField, scene: Scene, device: torch.device) -> OccupancyGrid:
    """``grid`` plus the voxels no training camera sees (:func:`unseen_voxels` of the
    unmarked ones): behind the teacher's surfaces from every view, such as object interiors
    and undersides the cameras never look at. The photos say nothing about them, so
    empty-space skipping must not drop them."""
    box = grid.bbox.to(device)
    depths = training_depths(field, scene, box, float(grid.voxel_size.min()), device)
    idx = scene.indices("train")
    poses = torch.as_tensor(scene.poses[idx], dtype=torch.float32)
    intrinsics = torch.as_tensor(scene.intrinsics[idx], dtype=torch.float32)
    marked = grid.to_dense().to(device)
    unseen = unseen_voxels(~marked, box, poses, intrinsics, depths, scene.near)
    return OccupancyGrid.from_dense(marked | unseen, grid.bbox)
