"""Dense rendering of any radiance field: every sample of every ray is evaluated.

The reference that the fast renderer is tested against, and the renderer used while training
fields whose cost per sample is small enough to afford it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from kilonerf.fields.base import RadianceField
from kilonerf.render.volume import RenderOutput, alpha_from_density, composite, stratified_samples, uniform_samples


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
    alpha = alpha_from_density(sigma.reshape(n, s), deltas)
    return composite(alpha, rgb.reshape(n, s, 3), t, background)
