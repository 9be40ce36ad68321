"""The trained student rendered as the paper does: the fast renderer (empty-space skipping,
early termination) over uniform samples, ReLU density."""

from __future__ import annotations

import torch
from torch import Tensor

from kilonerf.data.cameras import ray_box_intersect
from kilonerf.data.scene import FieldRays, Scene
from kilonerf.data.scene_types import field_rays
from kilonerf.fields.multinet import MultiNetField
from kilonerf.kernels import GroupedBackend, default_render_backend, get_backend
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.render.fast import FastRenderOutput, render_fast
from kilonerf.render.volume import join_pieces


class StudentRenderer:
    """Evaluation renders of a student with ReLU density through the fast renderer.

    World rays go into the student's space through the scene's ray map; samples sit at fixed
    steps of (far - near) / (num_samples - 1) of the scene's range, from the start of each ray
    (or piece of one), as in the paper's render setting. Without a scene, rays are sampled
    between box entry and exit and the background is black. ``backend``: grouped-evaluation
    backend (default: the compiled ``cpu`` one on the CPU).
    """

    def __init__(self, student: MultiNetField, occupancy: OccupancyGrid | None, scene: Scene | None,
                 num_samples: int, chunk_rays: int, backend: str | None = None) -> None:  # fmt: skip
        self.student, self.num_samples, self.chunk_rays = student, num_samples, chunk_rays
        device = student.bbox.device
        # Resolved now: a bad name fails at load, and the compiled backend builds here, not mid-render.
        self.backend = get_backend(backend or default_render_backend(device))
        self.occupancy = occupancy.to(device) if occupancy is not None else None
        self.scene_range = (float(scene.near), float(scene.far)) if scene is not None else None
        self.ray_map = scene.ray_map if scene is not None else None
        self.background = torch.as_tensor(scene.background, dtype=torch.float32, device=device) if scene is not None else None

    def field_rays(self, origins: Tensor, dirs: Tensor) -> FieldRays:
        """World rays (N, 3) in the student's space, with the range to sample along each."""
        if self.scene_range is not None:
            return field_rays(self.ray_map, origins, dirs, *self.scene_range)
        near, far, hit = ray_box_intersect(origins, dirs, self.student.bbox)
        return FieldRays(origins, dirs, near, torch.where(hit, far, near), 1)

    def step(self, rays: FieldRays) -> float:
        """The distance between samples: the scene's range over ``num_samples`` (without a scene,
        the longest of ``rays``)."""
        lo, hi = self.scene_range if self.scene_range is not None else (0.0, float((rays.far - rays.near).max(initial=0.0)))
        return (hi - lo) / max(self.num_samples - 1, 1)

    def mask(self, points: Tensor) -> Tensor:
        if self.occupancy is None:
            return self.student.grid.inside(points)
        return self.occupancy.lookup(points) & self.student.grid.inside(points)

    @torch.no_grad()
    def render(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """World rays (N, 3) -> rgb (N, 3)."""
        return self.render_with_stats(origins, dirs)[0]

    @torch.no_grad()
    def render_output(
        self, origins: Tensor, dirs: Tensor, ert_threshold: float = 0.01, skip_empty: bool = True,
        samples_per_pass: int = 8, backend: str | GroupedBackend | None = None, count_candidates: bool = False,
    ) -> FastRenderOutput:  # fmt: skip
        """One :func:`render_fast` call over world rays (N, 3), pieces joined: rgb (N, 3), acc
        (N,); depth is summed over pieces in the pieces' own units; sample counts and profile
        are the call's. Arguments as :func:`render_fast`'s."""
        rays = self.field_rays(origins, dirs)
        res = render_fast(self.student, self.occupancy, rays.origins, rays.dirs, rays.near, rays.far, self.num_samples,
                          None, backend=backend or self.backend, ert_threshold=ert_threshold,
                          samples_per_pass=samples_per_pass, use_occupancy=skip_empty and self.occupancy is not None,
                          count_candidates=count_candidates, step=self.step(rays))  # fmt: skip
        res.rgb, res.acc = join_pieces(res.rgb, res.acc, rays.pieces, self.background)
        res.depth = res.depth.reshape(-1, rays.pieces).sum(dim=1)
        return res

    @torch.no_grad()
    def render_with_stats(
        self, origins: Tensor, dirs: Tensor, ert_threshold: float = 0.01, skip_empty: bool = True,
        samples_per_pass: int = 8,
    ) -> tuple[Tensor, int]:  # fmt: skip
        """World rays (N, 3) -> rgb (N, 3) and the number of samples evaluated, ``chunk_rays``
        at a time. ``ert_threshold`` (0 disables early termination), ``skip_empty``
        (empty-space skipping with the occupancy grid) and ``samples_per_pass`` are the fast
        renderer's."""
        out, evaluated = [], 0
        for i in range(0, origins.shape[0], self.chunk_rays):
            res = self.render_output(origins[i : i + self.chunk_rays], dirs[i : i + self.chunk_rays], ert_threshold,
                                     skip_empty, samples_per_pass)  # fmt: skip
            evaluated += res.samples_evaluated
            out.append(res.rgb)
        rgb = torch.cat(out) if out else origins.new_zeros(0, 3)
        return rgb, evaluated
