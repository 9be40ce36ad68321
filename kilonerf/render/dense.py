"""Dense rendering of any radiance field: every sample of every ray is evaluated.

The reference that the fast renderer is tested against, and the renderer used while training
fields whose cost per sample is small enough to afford it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from kilonerf.data.cameras import ray_box_intersect
from kilonerf.fields.base import RadianceField
from kilonerf.render.volume import RenderOutput, composite, stratified_samples, uniform_samples


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
    """A field rendered densely inside a box for evaluation: ``num_samples`` bin centres between
    each ray's entry into and exit from ``bbox`` (rays that miss it show the background),
    ``chunk_points`` samples at a time."""

    def __init__(self, field: RadianceField, bbox: Tensor, background: Tensor, num_samples: int,
                 chunk_points: int) -> None:  # fmt: skip
        self.field, self.bbox, self.background = field, bbox, background
        self.num_samples, self.chunk_points = num_samples, chunk_points

    def segments(self, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        near, far, hit = ray_box_intersect(origins, dirs, self.bbox)
        # An empty segment gives zero step lengths, hence zero opacity: background only.
        return near, torch.where(hit, far, near)

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """rays (N, 3) -> rgb (N, 3)."""
        chunk = max(1, self.chunk_points // self.num_samples)
        out = []
        for i in range(0, origins.shape[0], chunk):
            o, d = origins[i : i + chunk], dirs[i : i + chunk]
            near, far = self.segments(o, d)
            out.append(render_dense(self.field, o, d, near, far, self.num_samples, self.background, sampling="centers").rgb)
        return torch.cat(out) if out else origins.new_zeros(0, 3)
