"""NeRF's positional encoding, as KiloNeRF uses it."""

from __future__ import annotations

import torch
from torch import Tensor


def encoded_dim(in_dim: int, num_freqs: int) -> int:
    """Width of :func:`positional_encoding`'s output: raw input plus sin and cos per frequency."""
    return in_dim * (1 + 2 * num_freqs)


def positional_encoding(x: Tensor, num_freqs: int) -> Tensor:
    """[x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x)], no factor of pi.

    Args:
        x: (..., D).
        num_freqs: L (10 for positions, 4 for directions in the paper).
    Returns:
        (..., D * (1 + 2 L)); for each frequency the D sines come before the D cosines.
    """
    freqs = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)
    scaled = x[..., None, :] * freqs[:, None]  # (..., L, D)
    enc = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1)  # (..., L, 2D)
    return torch.cat([x, enc.flatten(-2)], dim=-1)


def positional_encoding_grouped(x: Tensor, num_freqs: int) -> Tensor:
    """The values of :func:`positional_encoding` in another column order: ``[x, sines, cosines]``
    with each block ordered coordinate-major (all frequencies of x0, then of x1, ...).

    Computing sin and cos once each over one contiguous block is about twice as fast on the CPU
    as interleaving them per frequency; :func:`grouped_encoding_order` maps the columns back.

    Args:
        x: (N, D).
    Returns:
        (N, D * (1 + 2 L)).
    """
    n, d = x.shape
    freqs = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)
    scaled = (x[:, :, None] * freqs).reshape(n, d * num_freqs)
    return torch.cat([x, torch.sin(scaled), torch.cos(scaled)], dim=1)


def grouped_encoding_order(in_dim: int, num_freqs: int) -> list[int]:
    """Column ``j`` of :func:`positional_encoding_grouped` is column ``order[j]`` of
    :func:`positional_encoding` (so ``W[order]`` are the matching weight rows)."""
    d, block = in_dim, 2 * in_dim
    sin = [d + f * block + c for c in range(d) for f in range(num_freqs)]
    cos = [d + f * block + d + c for c in range(d) for f in range(num_freqs)]
    return [*range(d), *sin, *cos]
