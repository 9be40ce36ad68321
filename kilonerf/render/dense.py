"""Dense rendering of any radiance field: every sample of every ray is evaluated.

The reference that the fast renderer is tested against, and the renderer used while training
fields whose cost per sample is small enough to afford it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from kilonerf.data.cameras import clip_to_box
from kilonerf.data.scene import RayMap
from kilonerf.data.scene_types import field_rays
from kilonerf.fields.base import RadianceField
from kilonerf.render.volume import RenderOutput, composite, join_pieces, stratified_samples, uniform_samples


def render_dense(
    field: RadianceField,
    origins: Tensor,
    dirs: Tensor,
    near: Tensor,
    far: Tensor,
    num_samples: int,
    background: Tensor | None,
    *,
    sampling: str = "uniform",
    generator: torch.Generator | None = None,
    sample_mask: Callable[[Tensor], Tensor] | None = None,
) -> RenderOutput:
    """Render rays by evaluating ``field`` at ``num_samples`` points each.

    Args:
        field: any :class:`RadianceField`.
        origins, dirs: (N, 3), dirs unit length.
        near, far: (N,) ray segment to sample (e.g. from ``ray_box_intersect``).
        num_samples: S samples per ray.
        background: (3,) colour or None (black).
        sampling: ``"uniform"`` (the paper's render-time placement: near to far inclusive, no
            jitter), ``"stratified"`` (jittered in equal bins, for training) or ``"centers"``
            (bin centres).
        sample_mask: optional points (M, 3) -> bool (M,); samples where it is False contribute
            nothing (used to skip empty voxels and points outside the box).
    Returns:
        :class:`RenderOutput` with rgb (N, 3), depth (N,), acc (N,), weights (N, S).
    """
    if sampling == "uniform":
        t, deltas = uniform_samples(near, far, num_samples)
    elif sampling in ("stratified", "centers"):
        t, deltas = stratified_samples(near, far, num_samples, perturb=sampling == "stratified", generator=generator)
    else:
        raise ValueError(f"unknown sampling '{sampling}'")
    n, s = t.shape
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    flat_points = points.reshape(-1, 3)
    flat_dirs = dirs[:, None, :].expand(n, s, 3).reshape(-1, 3)
    if sample_mask is None:
        sigma, rgb = field.forward(flat_points, flat_dirs)
    else:
        keep = sample_mask(flat_points)
        sigma = flat_points.new_zeros(n * s)
        rgb = flat_points.new_zeros(n * s, 3)
        if bool(keep.any()):
            s_k, c_k = field.forward(flat_points[keep], flat_dirs[keep])
            sigma = sigma.index_put((keep,), s_k.to(sigma.dtype))
            rgb = rgb.index_put((keep,), c_k.to(rgb.dtype))
    return composite(sigma.reshape(n, s) * deltas, rgb.reshape(n, s, 3), t, background)


class BoxRenderer:
    """A field rendered densely inside a box: ``num_samples`` samples between each ray's entry
    into and exit from ``bbox`` (rays that miss it show the background), ``chunk_points``
    samples at a time when evaluating. World rays go into the field's space through the
    scene's ``ray_map``."""

    def __init__(self, field: RadianceField, bbox: Tensor, background: Tensor, num_samples: int,
                 chunk_points: int, ray_map: RayMap | None = None) -> None:  # fmt: skip
        self.field, self.bbox, self.background = field, bbox, background
        self.num_samples, self.chunk_points, self.ray_map = num_samples, chunk_points, ray_map

    def render(self, origins: Tensor, dirs: Tensor, sampling: str,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Differentiable render of world rays (N, 3) (``sampling`` as :func:`render_dense`):
        rgb (N, 3) on the background and opacity (N,)."""
        rays = field_rays(self.ray_map, origins, dirs, 0.0, math.inf)
        # An empty segment gives zero step lengths, hence zero opacity: background only.
        near, far = clip_to_box(rays.origins, rays.dirs, self.bbox, rays.near, rays.far)
        out = render_dense(self.field, rays.origins, rays.dirs, near, far, self.num_samples, None,
                           sampling=sampling, generator=generator)  # fmt: skip
        return join_pieces(out.rgb, out.acc, rays.pieces, self.background)

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Evaluation render at the bin centres: world rays (N, 3) -> rgb (N, 3)."""
        chunk = max(1, self.chunk_points // self.num_samples)
        out = [self.render(origins[i : i + chunk], dirs[i : i + chunk], "centers")[0]
               for i in range(0, origins.shape[0], chunk)]  # fmt: skip
        return torch.cat(out) if out else origins.new_zeros(0, 3)
