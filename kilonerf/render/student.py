"""The trained student rendered as the paper does: the fast renderer (empty-space skipping,
early termination) over uniform samples, ReLU density."""

from __future__ import annotations

import torch
from torch import Tensor

from kilonerf.data.cameras import ray_box_intersect
from kilonerf.data.scene import Scene
from kilonerf.fields.multinet import MultiNetField
from kilonerf.kernels import default_render_backend, get_backend
from kilonerf.render.fast import render_fast
from kilonerf.occupancy.grid import OccupancyGrid


class StudentRenderer:
    """Evaluation renders of a student with ReLU density through the fast renderer.

    Rays are sampled uniformly from the scene's near to far (the paper's render setting), or
    between box entry and exit when no scene is given (then the background is black).
    ``backend``: grouped-evaluation backend (default: the compiled ``cpu`` one on the CPU).
    """

    def __init__(self, student: MultiNetField, occupancy: OccupancyGrid | None, scene: Scene | None,
                 num_samples: int, chunk_rays: int, backend: str | None = None) -> None:  # fmt: skip
        self.student, self.num_samples, self.chunk_rays = student, num_samples, chunk_rays
        device = student.bbox.device
        # Resolved now: a bad name fails at load, and the compiled backend builds here, not mid-render.
        self.backend = get_backend(backend or default_render_backend(device))
        self.occupancy = occupancy.to(device) if occupancy is not None else None
        self.scene_range = (float(scene.near), float(scene.far)) if scene is not None else None
        self.background = torch.as_tensor(scene.background, dtype=torch.float32, device=device) if scene is not None else None

    def segments(self, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        if self.scene_range is not None:
            n = origins.shape[0]
            return origins.new_full((n,), self.scene_range[0]), origins.new_full((n,), self.scene_range[1])
        near, far, hit = ray_box_intersect(origins, dirs, self.student.bbox)
        return near, torch.where(hit, far, near)

    def mask(self, points: Tensor) -> Tensor:
        if self.occupancy is None:
            return self.student.grid.inside(points)
        return self.occupancy.lookup(points) & self.student.grid.inside(points)

    @torch.no_grad()
    def render(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """rays (N, 3) -> rgb (N, 3)."""
        return self.render_with_stats(origins, dirs)[0]

    @torch.no_grad()
    def render_with_stats(
        self, origins: Tensor, dirs: Tensor, ert_threshold: float = 0.01, skip_empty: bool = True,
        samples_per_pass: int = 8,
    ) -> tuple[Tensor, int]:  # fmt: skip
        """rays (N, 3) -> rgb (N, 3) and the number of samples evaluated. ``ert_threshold`` (0 disables early termination),
        ``skip_empty`` (empty-space skipping with the occupancy grid) and ``samples_per_pass``
        are the fast renderer's."""
        out, evaluated = [], 0
        for i in range(0, origins.shape[0], self.chunk_rays):
            o, d = origins[i : i + self.chunk_rays], dirs[i : i + self.chunk_rays]
            near, far = self.segments(o, d)
            res = render_fast(self.student, self.occupancy, o, d, near, far, self.num_samples, self.background,
                              ert_threshold=ert_threshold, samples_per_pass=samples_per_pass, backend=self.backend,
                              use_occupancy=skip_empty and self.occupancy is not None, count_candidates=False)  # fmt: skip
            evaluated += res.samples_evaluated
            out.append(res.rgb)
        rgb = torch.cat(out) if out else origins.new_zeros(0, 3)
        return rgb, evaluated
