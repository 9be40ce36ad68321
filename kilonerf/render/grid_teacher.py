"""Rendering the fast grid teacher (:class:`GridTeacherField`): rays marched with a fixed
step through the field's occupancy bitfield, packed samples composited, colour evaluated only
where a sample's weight is high enough. Used by its trainer and to render a trained teacher."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kilonerf.data.cameras import clip_to_box
from kilonerf.data.scene import RayMap
from kilonerf.data.scene_types import field_rays
from kilonerf.fields.grid_teacher import GridTeacherField
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.occupancy.sampling import PackedSamples, march_occupied
from kilonerf.render.packed import packed_composite, segment_exclusive_cumsum, segment_starts
from kilonerf.render.volume import MAX_OPTICAL_THICKNESS, composite_weights, join_pieces


@dataclass
class TeacherRender:
    rgb: Tensor
    """(N, 3) composited colour, background included."""
    acc: Tensor
    """(N,) accumulated opacity."""
    num_rays: int
    """Rays marched: N times the pieces per camera ray (:class:`~kilonerf.data.scene.FieldRays`)."""
    alpha: Tensor
    """(M,) opacity of every marched (occupied) sample, packed by marched ray."""
    weights: Tensor
    """(M,) their compositing weights."""
    samples: PackedSamples
    """The marched samples themselves (rays, distances, positions)."""
    start: Tensor
    """(M,) index of the first sample of each sample's ray."""
    step: float


class GridTeacherRenderer:
    """Renders ``field`` between the scene's ``near`` and ``far`` onto ``background``; world
    rays go into the field's space through the scene's ``ray_map``.

    Args:
        step_ratio: the march step in density cells.
        color_weight_threshold: colour only on samples whose weight exceeds this (after the
            coarse phase, see :meth:`color_threshold`).
        eval_chunk_rays: rays rendered together by :meth:`render_rays`.
        coarse: whether the field is still in its coarse phase (no resolution step applied).
        ert_threshold: drop the samples behind this transmittance along their camera ray
            (0: keep every marched sample), see :meth:`render`.
    """

    def __init__(self, field: GridTeacherField, near: float, far: float, background: Tensor, step_ratio: float,
                 color_weight_threshold: float, eval_chunk_rays: int, coarse: bool = True,
                 ray_map: RayMap | None = None, ert_threshold: float = 0.0) -> None:  # fmt: skip
        self.field, self.near, self.far, self.background = field, float(near), float(far), background
        self.ray_map, self.ert_threshold = ray_map, ert_threshold
        self.step_ratio, self.color_weight_threshold = step_ratio, color_weight_threshold
        self.eval_chunk_rays, self.coarse = eval_chunk_rays, coarse
        self._occupancy: tuple[Tensor, int, OccupancyGrid] | None = None

    def occupancy(self) -> OccupancyGrid:
        """The field's occupancy bitfield (cells of its density lattice) as an
        :class:`OccupancyGrid`, rebuilt only when the field's tensor changed (replaced on every
        update, or written in place by loading a state dict)."""
        occ = self.field.occupancy
        cached = self._occupancy
        if cached is None or cached[0] is not occ or cached[1] != occ._version:
            grid = OccupancyGrid.from_dense(occ.permute(2, 1, 0), self.field.bbox).to(occ.device)
            self._occupancy = cached = (occ, occ._version, grid)
        return cached[2]

    def march_step(self) -> float:
        return self.step_ratio * self.field.voxel_size

    def color_threshold(self) -> float:
        """Weight above which a sample's colour is evaluated; 0 (every sample) in the coarse phase.

        A skipped sample still occludes (its weight counts in the opacity) but adds no colour,
        i.e. it renders black. At the start every sample is below ``color_weight_threshold``
        (one step's opacity is ``alpha_init``), so with the threshold the photometric loss
        could only grow density where the photo is darker than the background: harmless on
        white, but with ``random_background`` it held back the bright parts of the object
        (lego_100, 2000 steps: 30.0 -> 31.1 dB; white background unchanged). The coarse
        colour is the diffuse grid alone, cheap enough to evaluate everywhere.
        """
        return 0.0 if self.coarse else self.color_weight_threshold

    def render(self, origins: Tensor, dirs: Tensor, jitter: Tensor | None,
               background: Tensor | None = None) -> TeacherRender:
        """Differentiable render of world rays (N, 3); ``jitter`` (N,) in [0, 1) or None (step
        centres); ``background`` (3,) or per ray (N, 3), default the scene's."""
        f = self.field
        rays = field_rays(self.ray_map, origins, dirs, self.near, self.far)
        origins, dirs, k = rays.origins, rays.dirs, rays.pieces
        near, far = clip_to_box(origins, dirs, f.bbox, rays.near, rays.far)
        step = self.march_step()
        n = origins.shape[0]
        u = jitter.repeat_interleave(k) if jitter is not None else near.new_full((n,), 0.5)
        # Samples at near + (k + u) * step, for every k that keeps them in front of far.
        count = torch.ceil(((far - near).clamp_min(0.0) / step - u).clamp_min(0.0)).long()
        step_t = near.new_full((n,), step)
        s = march_occupied(origins, dirs, near + u * step, step_t, torch.zeros_like(count), count, self.occupancy())
        if self.ert_threshold > 0:
            s = self._visible(s, step, k)
        sigma = f.activate(f.raw_density(s.points))
        start = segment_starts(s.ray_id, n)
        weights, alpha, _ = composite_weights(sigma * step, s.ray_id, n, start)
        # Colour only where it can matter: the feature gather and MLP dominate the cost per
        # sample, and most marched samples are faint haze or hidden behind a surface.
        keep = torch.nonzero(weights.detach() > self.color_threshold()).squeeze(1)
        ray_k = s.ray_id.index_select(0, keep)
        rgb = f.color(s.points.index_select(0, keep), dirs, ray_k)
        bg = self.background if background is None else background
        color, acc = packed_composite(weights.index_select(0, keep), rgb, ray_k, n, None,
                                      acc_weights=weights, acc_ray_id=s.ray_id)
        color, acc = join_pieces(color, acc, k, bg)
        return TeacherRender(color, acc, n, alpha, weights, s, start, step)

    @torch.no_grad()
    def _visible(self, s: PackedSamples, step: float, pieces: int) -> PackedSamples:
        """The samples in front of :attr:`ert_threshold` transmittance along their camera ray
        (its pieces in order), from a pass over the density without gradients. What is
        dropped weighs at most the threshold in the image."""
        tau = self.field.activate(self.field.raw_density(s.points)) * step
        camera = torch.div(s.ray_id, pieces, rounding_mode="floor")
        before = segment_exclusive_cumsum(tau.clamp_max(MAX_OPTICAL_THICKNESS), segment_starts(camera, s.num_rays // pieces))
        keep = torch.nonzero(before < -math.log(self.ert_threshold)).squeeze(1)
        return PackedSamples(s.ray_id.index_select(0, keep), s.t.index_select(0, keep), s.points.index_select(0, keep),
                             s.num_rays)  # fmt: skip

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Evaluation render (samples at step centres), chunked: rays (N, 3) -> rgb (N, 3)."""
        k = self.eval_chunk_rays
        out = [self.render(origins[i:i + k], dirs[i:i + k], None).rgb for i in range(0, origins.shape[0], k)]
        return torch.cat(out) if out else origins.new_zeros(0, 3)
