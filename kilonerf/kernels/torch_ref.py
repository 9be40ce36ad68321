"""Pure-torch grouped evaluation: the reference backend, differentiable, any device.

Strategy (chosen by measurement, see ``GroupLayout``): sort the samples by network, cut each
network's run of samples into pieces of at most ``max_rows`` rows, and pad every piece to the
smallest of a few block sizes (16, 24, 32, 48, ... up to ``max_rows``: powers of two and
1.5 x powers of two, so a piece of 16 rows or more is padded by at most a third). Pieces of equal block size
form one batch evaluated with ``torch.baddbmm`` against that batch's gathered weights, so there
is one Python iteration per block size (about a dozen), never one per network. A single gather
puts the encoded samples into block order; padding rows repeat a real sample (no zero fill) and
their outputs are never read, so no gradient reaches them.

Positions and directions are encoded in the grouped column order of
:func:`~kilonerf.kernels.encoding.positional_encoding_grouped` (one sine and one cosine call),
and the weight rows are gathered in that order. Renderer timings with this backend, before
and after this layout: ``benchmarks/torch_render.py``, quoted in ``docs/benchmarks.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kilonerf.kernels.encoding import grouped_encoding_order, positional_encoding_grouped
from kilonerf.kernels.base import DensityFirstBackend, MultiNetParams
from kilonerf.kernels.row_gather import gather_rows


RGB_PAD_COLUMNS = 16
"""Output width the last (3-column) layer is padded to; see :func:`mlp_blocks`."""


def block_sizes(max_rows: int, min_rows: int = 16) -> list[int]:
    """Ascending block sizes: ``min_rows`` x 2^k and 1.5 x that, up to ``max_rows`` (included)."""
    lo = min(min_rows, max_rows)
    sizes = {max_rows}
    size = lo
    while size < max_rows:
        sizes.add(size)
        if size * 3 // 2 < max_rows and size % 2 == 0:
            sizes.add(size * 3 // 2)
        size *= 2
    return sorted(sizes)


@dataclass
class GroupLayout:
    """How samples are arranged into padded blocks.

    Block rows are numbered group after group; group ``g`` starts at row ``row0[g]`` and has
    ``nets[g]`` (B_g,) blocks (the network of each) of ``rows[g]`` rows. ``row_src`` (R,) is
    the sample each block row holds (padding rows repeat their piece's first sample) and
    ``row_of_sample`` (N,) the block row holding each sample.
    """

    row_src: Tensor
    row_of_sample: Tensor
    row0: list[int]
    nets: list[Tensor]
    rows: list[int]

    @staticmethod
    def build(net_index: Tensor, max_rows: int = 256) -> "GroupLayout":
        """Plan the padded blocks for samples with networks ``net_index`` (N,) int64."""
        device = net_index.device
        n = int(net_index.shape[0])
        # index_select throughout: tensor[idx] indexing costs several times more on the CPU.
        # int32 keys sort ~30% faster than int64 (network counts are far below 2^31).
        sorted_nets, order = torch.sort(net_index.to(torch.int32), stable=True)
        nets, counts = torch.unique_consecutive(sorted_nets, return_counts=True)
        # Pieces: each network's run split into chunks of at most max_rows samples.
        num_pieces = (counts + max_rows - 1) // max_rows
        net_rank = torch.repeat_interleave(torch.arange(len(nets), device=device), num_pieces)
        first_piece = torch.cumsum(num_pieces, 0) - num_pieces
        piece_in_net = torch.arange(len(net_rank), device=device) - first_piece.index_select(0, net_rank)
        piece_len = torch.clamp(counts.index_select(0, net_rank) - piece_in_net * max_rows, max=max_rows)
        sizes = torch.tensor(block_sizes(max_rows), device=device)
        size_id = torch.searchsorted(sizes, piece_len)
        # Pieces ordered by block size (stable: networks stay sorted inside a group).
        piece_order = torch.argsort(size_id, stable=True)
        p_len, p_id = piece_len.index_select(0, piece_order), size_id.index_select(0, piece_order)
        p_rank = net_rank.index_select(0, piece_order)
        p_rows = sizes.index_select(0, p_id)
        net_start = torch.cumsum(counts, 0) - counts
        p_src = net_start.index_select(0, p_rank) + piece_in_net.index_select(0, piece_order) * max_rows
        total = int(p_rows.sum())
        piece_of_row = torch.repeat_interleave(torch.arange(len(p_rows), device=device), p_rows, output_size=total)
        r = torch.arange(total, device=device) - (torch.cumsum(p_rows, 0) - p_rows).index_select(0, piece_of_row)
        real = r < p_len.index_select(0, piece_of_row)
        row_src = order.index_select(0, p_src.index_select(0, piece_of_row) + torch.where(real, r, torch.zeros_like(r)))
        real_rows = real.nonzero()[:, 0]
        row_of_sample = torch.empty(n, dtype=torch.int64, device=device)
        row_of_sample.index_copy_(0, row_src.index_select(0, real_rows), real_rows)
        ids, pieces_per_size = torch.unique_consecutive(p_id, return_counts=True)
        rows = sizes[ids].tolist()
        counts_l = pieces_per_size.tolist()
        row0 = [0]
        for size, count in zip(rows, counts_l):
            row0.append(row0[-1] + size * count)
        return GroupLayout(row_src, row_of_sample, row0[:-1], list(torch.split(nets.index_select(0, p_rank).long(), counts_l)), rows)


def _gather_layer_rows(weight: Tensor, nets: Tensor, row_order: Tensor) -> Tensor:
    """``weight[nets][:, row_order]`` (B, len(row_order), out) in one gather."""
    k, fan_in, fan_out = weight.shape
    flat = (nets[:, None] * fan_in + row_order).reshape(-1)
    return gather_rows(weight, flat, (k * fan_in, fan_out)).view(len(nets), len(row_order), fan_out)


def gather_block_weights(
    params: MultiNetParams, nets: Tensor, pos_order: Tensor, view_order: Tensor, density_only: bool
) -> list[Tensor]:
    """The layers of the networks ``nets`` (B,), one block each, for :func:`mlp_blocks`.

    Returns:
        ``[w0, b0, w1, b1, w2, b2, w3, b3, w4, b4]``: weights (B, in, out) with the first and
        the view layer's rows in ``pos_order`` / ``view_order``, biases (B, 1, out); the last
        layer padded to :data:`RGB_PAD_COLUMNS` outputs. ``density_only``: the first three
        layers, the third cut to its density column.
    """
    w, b = params.weights, params.biases

    def bias(t: Tensor) -> Tensor:
        return gather_rows(t, nets)[:, None, :]

    first = [_gather_layer_rows(w[0], nets, pos_order), bias(b[0]), gather_rows(w[1], nets), bias(b[1])]
    if density_only:
        # A one-column product is slow, but cheaper than the 32 feature columns nobody reads.
        return first + [w[2][..., :1].index_select(0, nets), bias(b[2][..., :1])]
    # Three output columns run several times slower per row than 16 in batched products on
    # the CPU, so the last layer is computed padded with zero columns.
    pad = (0, RGB_PAD_COLUMNS - 3)
    return first + [gather_rows(w[2], nets), bias(b[2]), _gather_layer_rows(w[3], nets, view_order), bias(b[3]),
                    F.pad(gather_rows(w[4], nets), pad), F.pad(bias(b[4]), pad)]  # fmt: skip


def mlp_blocks(layers: Sequence[Tensor], pe_pos: Tensor, pe_dir: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The tiny MLP on padded blocks of grouped-order encodings.

    Args:
        layers: the blocks' layers from :func:`gather_block_weights` (B blocks).
        pe_pos: (B, R, Cp) positions encoded by ``positional_encoding_grouped``; pe_dir:
            (B, R, Cd) directions likewise, or None (density-only layers) to stop after the density.
    Returns:
        raw density (B, R, 1) and rgb (B, R, 3) (None without ``pe_dir``).
    """
    w0, b0, w1, b1, w2, b2 = layers[:6]
    # In-place activations: baddbmm's backward does not need its output, so autograd allows it.
    x = torch.relu_(torch.baddbmm(b0, pe_pos, w0))
    x = torch.relu_(torch.baddbmm(b1, x, w1))
    if pe_dir is None:
        return torch.baddbmm(b2, x, w2), None
    out = torch.baddbmm(b2, x, w2)  # density and features in one product
    # The view layer as two products (features, then directions) instead of one on their
    # concatenation: the same sum without copying both inputs into a new tensor.
    w3, b3, w4, b4 = layers[6:]
    h = out.shape[-1] - 1
    x = torch.baddbmm(b3, out[..., 1:], w3[:, :h]).baddbmm_(pe_dir, w3[:, h:])
    rgb = torch.sigmoid(torch.baddbmm(b4, torch.relu_(x), w4)[..., :3])
    return out[..., :1], rgb


class TorchRefBackend(DensityFirstBackend):
    """Reference backend: sorted, padded, batched matmuls (see the module docstring)."""

    name = "torch_ref"
    differentiable = True

    def __init__(self, max_rows: int = 256) -> None:
        """``max_rows``: largest block; longer runs of one network are split."""
        self.max_rows = max_rows

    def _run(
        self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor | None,
        dir_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        n = int(net_index.shape[0])
        if n == 0:
            return local_pos.new_zeros(0), local_pos.new_zeros(0, 3)
        device = net_index.device
        layout = GroupLayout.build(net_index, self.max_rows)
        # Encode the N samples, then gather them into block order (padding rows included).
        pe_pos = positional_encoding_grouped(local_pos, params.pos_freqs).index_select(0, layout.row_src)
        pe_dir = None
        if dirs is not None:
            dir_rows = layout.row_src if dir_index is None else dir_index.index_select(0, layout.row_src)
            pe_dir = positional_encoding_grouped(dirs, params.dir_freqs).index_select(0, dir_rows)
        pos_order = torch.tensor(grouped_encoding_order(3, params.pos_freqs), device=device)
        h = params.hidden
        view_order = torch.tensor([*range(h), *(h + i for i in grouped_encoding_order(3, params.dir_freqs))], device=device)
        sizes = [int(nets.shape[0]) for nets in layout.nets]
        density_only = dirs is None
        groups: Iterable[Sequence[Tensor]]
        if torch.is_grad_enabled() and any(w.requires_grad for w in params.weights):
            # One gather of every block's layers, split by block size: autograd then scatters one
            # zeroed full-size gradient per tensor and call, not one per block size (a dozen).
            # ub_200 fine-tuning: 0.72 -> 0.23 s a step, with fused Adam.
            gathered = gather_block_weights(params, torch.cat(layout.nets), pos_order, view_order, density_only)
            groups = list(zip(*(torch.split(t, sizes) for t in gathered)))
        else:  # one block size at a time: less memory at once
            groups = (gather_block_weights(params, nets, pos_order, view_order, density_only) for nets in layout.nets)
        sig_parts, rgb_parts = [], []
        for row0, blocks, rows, layers in zip(layout.row0, sizes, layout.rows, groups):
            sl = slice(row0, row0 + blocks * rows)
            dir_block = None if pe_dir is None else pe_dir[sl].view(blocks, rows, -1)
            sigma, rgb = mlp_blocks(layers, pe_pos[sl].view(blocks, rows, -1), dir_block)
            sig_parts.append(sigma.reshape(-1))
            if rgb is not None:
                rgb_parts.append(rgb.reshape(-1, 3))
        sigma_out = torch.cat(sig_parts).index_select(0, layout.row_of_sample)
        rgb_out = torch.cat(rgb_parts).index_select(0, layout.row_of_sample) if rgb_parts else None
        return sigma_out, rgb_out
