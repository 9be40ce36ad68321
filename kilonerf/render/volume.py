"""Reference volume rendering: sample placement and front-to-back alpha compositing.

This is the slow, obvious, differentiable renderer that every faster path is tested against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


RenderFn = Callable[[Tensor, Tensor], Tensor]
"""A trained model as a renderer: origins (N, 3), unit dirs (N, 3) -> rgb (N, 3) in [0, 1]."""


@dataclass
class RenderOutput:
    rgb: Tensor
    """(N, 3) composited colour, background included."""
    depth: Tensor
    """(N,) expected ray distance (weights times t, background contributes nothing)."""
    acc: Tensor
    """(N,) accumulated opacity, sum of weights."""
    weights: Tensor
    """(N, S) per-sample weights alpha_i * T_i."""


def stratified_samples(
    near: Tensor, far: Tensor, num_samples: int, perturb: bool, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Stratified sample distances: one per equal bin between near and far.

    With ``perturb`` each sample is uniform in its bin, otherwise at the bin centre.

    Args:
        near, far: (N,).
    Returns:
        t (N, S) sample distances and deltas (N, S) bin widths used as step lengths.
    """
    n = near.shape[0]
    step = (far - near) / num_samples
    idx = torch.arange(num_samples, dtype=near.dtype, device=near.device)
    if perturb:
        u = torch.rand((n, num_samples), dtype=near.dtype, device=near.device, generator=generator)
    else:
        u = torch.full((n, num_samples), 0.5, dtype=near.dtype, device=near.device)
    t = near[:, None] + (idx + u) * step[:, None]
    return t, step[:, None].expand(n, num_samples)


def uniform_samples(near: Tensor, far: Tensor, num_samples: int) -> tuple[Tensor, Tensor]:
    """The paper's render-time sampling: ``num_samples`` points from near to far inclusive,
    uniform step (far - near) / (num_samples - 1), no jitter.

    Returns:
        t (N, S) and deltas (N, S) equal to the step.
    """
    step = (far - near) / max(num_samples - 1, 1)
    idx = torch.arange(num_samples, dtype=near.dtype, device=near.device)
    t = near[:, None] + idx * step[:, None]
    return t, step[:, None].expand_as(t)


def alpha_from_density(sigma: Tensor, deltas: Tensor) -> Tensor:
    """alpha = 1 - exp(-sigma * delta), elementwise."""
    return 1.0 - torch.exp(-sigma * deltas)


def composite_block(alpha: Tensor, trans_in: Tensor | None = None, threshold: float | None = None) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing weights of consecutive samples of each ray: the one
    transmittance recurrence every Python renderer uses (the C renderer is tested against it).

    ``T_0 = trans_in`` (1 when None), ``T_{i+1} = T_i * (1 - alpha_i + 1e-10)`` (the guard keeps
    T > 0, as the original), weight ``w_i = alpha_i * T_i``. With ``threshold`` a ray stops at
    the first sample whose ``T_i`` is <= it (early ray termination): that sample and every
    later one get weight 0, wherever the block boundaries fall.

    Args:
        alpha: (R, S) opacities in [0, 1] of S consecutive samples of R rays.
        trans_in: (R,) transmittance in front of the block.
        threshold: early-termination transmittance, or None for none.
    Returns:
        weights (R, S) and the transmittance behind the block (R,).
    """
    factors = 1.0 - alpha + 1e-10
    start = torch.ones_like(alpha[:, :1]) if trans_in is None else trans_in[:, None]
    trans = torch.cumprod(torch.cat([start, factors[:, :-1]], dim=-1), dim=-1)
    weights = alpha * trans if threshold is None else alpha * trans * (trans > threshold)
    return weights, trans[:, -1] * factors[:, -1]


def composite(alpha: Tensor, rgb: Tensor, t: Tensor, background: Tensor | None = None) -> RenderOutput:
    """Front-to-back compositing of per-sample opacity and colour (:func:`composite_block`).

    Args:
        alpha: (N, S) opacities in [0, 1].
        rgb: (N, S, 3) colours.
        t: (N, S) sample distances (for depth).
        background: (3,) colour behind the scene, or None for black.
    """
    weights, _ = composite_block(alpha)
    acc = weights.sum(dim=-1)
    color = (weights[..., None] * rgb).sum(dim=-2)
    if background is not None:
        color = color + (1.0 - acc[:, None]) * background.to(color)
    depth = (weights * t).sum(dim=-1)
    return RenderOutput(rgb=color, depth=depth, acc=acc, weights=weights)
