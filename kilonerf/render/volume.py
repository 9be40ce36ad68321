"""Reference volume rendering: sample placement and front-to-back alpha compositing.

This is the slow, obvious, differentiable renderer that every faster path is tested against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from kilonerf.render.packed import segment_exclusive_cumsum, segment_starts


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


MAX_OPTICAL_THICKNESS = 30.0
"""Per-sample optical thickness is capped here before compositing: ``exp(-30)`` is 1e-13, so
the opacity is 1 to float32 precision, and a huge density can no longer swamp the float64
running sum that every later ray of a batch is measured against."""


def composite_weights(
    tau: Tensor, ray_id: Tensor, num_rays: int, start: Tensor | None = None,
    trans_in: Tensor | None = None, threshold: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Front-to-back compositing weights of packed samples: the one transmittance recurrence
    every Python renderer uses (the C renderer is tested against it).

    ``alpha_i = 1 - exp(-tau_i)``, ``T_i = T_in * exp(-sum_{j<i} tau_j)`` over the samples of
    the same ray, weight ``w_i = alpha_i * T_i``. Summing optical thickness (in float64, so long
    batches keep float32 precision per ray) instead of multiplying ``1 - alpha`` needs no guard
    against ``alpha = 1`` and keeps gradients finite there. With ``threshold`` a ray stops at the
    first sample whose ``T_i`` is <= it (early ray termination): that sample and every later
    one get weight 0, wherever batches of samples begin and end.

    Args:
        tau: (M,) optical thickness ``sigma * delta`` (>= 0) of each sample, sorted by ray and
            ascending along each ray (see :class:`~kilonerf.occupancy.sampling.PackedSamples`).
        ray_id: (M,) ray of each sample.
        start: optional (M,) :func:`~kilonerf.render.packed.segment_starts` of ``ray_id``.
        trans_in: (num_rays,) transmittance in front of these samples (1 when None).
        threshold: early-termination transmittance, or None for none.
    Returns:
        weights (M,), opacities alpha (M,) and the transmittance behind the samples
        (num_rays,), all differentiable w.r.t. ``tau`` (and ``trans_in``).
    """
    tau = tau.clamp_max(MAX_OPTICAL_THICKNESS)
    if start is None:
        start = segment_starts(ray_id, num_rays)
    trans = torch.exp(-segment_exclusive_cumsum(tau, start))
    total = tau.new_zeros(num_rays, dtype=torch.float64).index_add(0, ray_id, tau.double())
    trans_out = torch.exp(-total).to(tau.dtype)
    if trans_in is not None:
        trans = trans * trans_in.index_select(0, ray_id)
        trans_out = trans_out * trans_in
    alpha = -torch.expm1(-tau)
    weights = alpha * trans if threshold is None else alpha * trans * (trans > threshold)
    return weights, alpha, trans_out


def composite(tau: Tensor, rgb: Tensor, t: Tensor, background: Tensor | None = None) -> RenderOutput:
    """Front-to-back compositing of S samples on each of N rays (:func:`composite_weights`).

    Args:
        tau: (N, S) optical thickness ``sigma * delta`` of each sample (>= 0).
        rgb: (N, S, 3) colours.
        t: (N, S) sample distances (for depth).
        background: (3,) colour behind the scene, or None for black.
    """
    n, s = tau.shape
    ray_id = torch.arange(n, device=tau.device).repeat_interleave(s)
    weights = composite_weights(tau.reshape(-1), ray_id, n)[0].view(n, s)
    acc = weights.sum(dim=-1)
    color = (weights[..., None] * rgb).sum(dim=-2)
    if background is not None:
        color = color + (1.0 - acc[:, None]) * background.to(color)
    depth = (weights * t).sum(dim=-1)
    return RenderOutput(rgb=color, depth=depth, acc=acc, weights=weights)


def join_pieces(rgb: Tensor, acc: Tensor, pieces: int, background: Tensor | None) -> tuple[Tensor, Tensor]:
    """Camera rays from their pieces (:class:`~kilonerf.data.scene.FieldRays`), front to back.

    A piece rendered on its own from transmittance 1 gives its colour C_k (weights times
    colours, no background) and opacity A_k; the camera ray is then exactly
    ``sum_k T_k C_k + T background`` with ``T_k = prod_{j<k} (1 - A_j)`` and T the product of
    all (1 - A_k). With one piece this is the usual ``C + (1 - A) background``.

    Args:
        rgb: (N * K, 3) each piece's colour without background; acc: (N * K,) its opacity.
        pieces: K.
        background: (3,), per camera ray (N, 3), or None (black).
    Returns:
        rgb (N, 3) with the background, acc (N,).
    """
    if pieces == 1:
        out = rgb if background is None else rgb + (1.0 - acc)[:, None] * background.to(rgb)
        return out, acc
    c = rgb.reshape(-1, pieces, 3)
    clear = (1.0 - acc).reshape(-1, pieces)
    trans = torch.cumprod(torch.cat([torch.ones_like(clear[:, :1]), clear], dim=1), dim=1)
    out = (trans[:, :-1, None] * c).sum(dim=1)
    total = 1.0 - trans[:, -1]
    if background is not None:
        out = out + trans[:, -1:] * background.to(out)
    return out, total
