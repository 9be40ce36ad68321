"""The ``triton`` backend: the tiny MLPs as one fused Triton kernel (forward only).

Strategy, after the original's CUDA kernel: the samples are sorted by network and each
network's run is cut into tiles of ``block_rows`` samples; one program evaluates one tile. It
loads its network's weights once (into registers / shared memory, as Triton places them),
encodes positions and directions in registers (nothing encoded goes through memory), runs the
five layers as ``tl.dot`` products with every size padded to a power of two >= 16 (63 -> 64
position features, 27 -> 32 direction features, 3 colour outputs -> 16) with fp32
accumulation, and writes density and colour back in the input order. Weight rows are read in
the order of the in-register encoding (the grouped order of
:func:`~kilonerf.kernels.encoding.positional_encoding_grouped` plus zero padding) straight
from :class:`~kilonerf.kernels.base.MultiNetParams`, so nothing is repacked per call.

The tile table (network, first and end row of each tile) is built with torch operations on
the device over an upper bound of the tile count, ``ceil(N / block_rows) + min(N, networks)``;
programs beyond the real tiles find an empty range and return, so a call never waits for the
host (no ``.item()``).

Operand precision (``precision``): ``"ieee"`` (fp32 products, exact on any device), ``"tf32"``
(fp32 operands on the GPU's TF32 tensor cores; the interpreter computes it as fp32) or
``"fp16"`` (operands rounded to fp16, fp32 accumulation). The Triton interpreter
(``TRITON_INTERPRET=1``, read when this module is imported) runs the kernel on CPU tensors:
the tests use it. bf16 is not offered: the interpreter computes bf16 ``tl.dot`` wrongly, so it
could not be tested here.

Falls back to the pure-torch reference (:mod:`kilonerf.kernels.torch_ref`) where the kernel
does not apply: autograd recording (training, including fine-tuning on CUDA, runs on the
reference), CPU tensors outside the interpreter, non-float32 inputs, or a hidden width that is
not a power of two >= 16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kilonerf.kernels.base import DensityFirstBackend, MultiNetParams
from kilonerf.kernels.fused import FusedRenderer
from kilonerf.kernels.torch_ref import TorchRefBackend

PRECISIONS = ("ieee", "tf32", "fp16")
"""Operand precisions of the kernel's products (see the module docstring)."""


@triton.jit
def _encoding(x0, x1, x2, NF: tl.constexpr, C: tl.constexpr):
    """(BM, C) grouped encoding of the rows (x0, x1, x2), zero beyond column 3 + 6 NF, and the
    (C,) weight row (in :func:`positional_encoding`'s order) and validity of each column."""
    cols = tl.arange(0, C)
    raw = cols < 3
    sin = (cols >= 3) & (cols < 3 + 3 * NF)
    cos = (cols >= 3 + 3 * NF) & (cols < 3 + 6 * NF)
    j = tl.where(cos, cols - 3 - 3 * NF, cols - 3)  # d * NF + f within the sine or cosine block
    j = tl.where(raw, 0, j)
    d = tl.where(raw, cols, j // NF)
    f = j % NF
    scale = (tl.full([C], 1, tl.int32) << f).to(tl.float32)  # 2^f, exact like the reference's
    xd = tl.where(d[None, :] == 0, x0[:, None], tl.where(d[None, :] == 1, x1[:, None], x2[:, None]))
    s = xd * scale[None, :]
    # One sine per column: cos(s) = sin(s + pi / 2), the quarter turn added after reducing s to
    # [-pi, pi] (2 pi split Cody-Waite style, k * 6.28125 exact) so that it costs no accuracy.
    k = tl.floor(s * 0.15915494309189535 + 0.5)
    s = (s - k * 6.28125) - k * 0.0019353071795864769
    s = tl.where(cos[None, :], s + 1.5707963267948966, s)
    enc = tl.where(raw[None, :], xd, tl.sin(s))
    valid = raw | sin | cos
    enc = tl.where(valid[None, :], enc, 0.0)
    # positional_encoding's column of each: per frequency the 3 sines, then the 3 cosines.
    row = tl.where(raw, cols, 3 + f * 6 + tl.where(cos, 3, 0) + d)
    row = tl.where(valid, row, 0)
    return enc, row, valid


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr):
    """a @ b with fp32 accumulation and the operand precision of :data:`PRECISIONS`."""
    if PRECISION == "fp16":
        out = tl.dot(a.to(tl.float16), b.to(tl.float16), out_dtype=tl.float32)
    elif PRECISION == "tf32":
        out = tl.dot(a, b, input_precision="tf32")
    else:
        out = tl.dot(a, b, input_precision="ieee")
    return out


@triton.jit
def _tiny_mlp_kernel(
    order_ptr, tile_net_ptr, tile_start_ptr, tile_end_ptr, pos_ptr, dir_ptr, dir_index_ptr,
    w0_ptr, w1_ptr, w2_ptr, w3_ptr, w4_ptr, b0_ptr, b1_ptr, b2_ptr, b3_ptr, b4_ptr,
    sigma_ptr, rgb_ptr,
    H: tl.constexpr, LP: tl.constexpr, LD: tl.constexpr, CP: tl.constexpr, CD: tl.constexpr,
    BM: tl.constexpr, WITH_RGB: tl.constexpr, HAS_DIR_INDEX: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    start = tl.load(tile_start_ptr + tile)
    end = tl.load(tile_end_ptr + tile)
    if start < end:
        net = tl.load(tile_net_ptr + tile).to(tl.int64)
        rows = start + tl.arange(0, BM)
        live = rows < end
        sample = tl.load(order_ptr + rows, mask=live, other=0)
        x0 = tl.load(pos_ptr + sample * 3 + 0, mask=live, other=0.0)
        x1 = tl.load(pos_ptr + sample * 3 + 1, mask=live, other=0.0)
        x2 = tl.load(pos_ptr + sample * 3 + 2, mask=live, other=0.0)
        hid = tl.arange(0, H)
        # Layer 0: encoded position (BM, CP) @ (CP, H); weight rows in the encoding's order.
        enc, wrow, wvalid = _encoding(x0, x1, x2, LP, CP)
        fan0 = 3 + 6 * LP
        w = tl.load(w0_ptr + net * fan0 * H + wrow[:, None] * H + hid[None, :], mask=wvalid[:, None], other=0.0)
        x = _mm(enc, w, PRECISION) + tl.load(b0_ptr + net * H + hid)[None, :]
        x = tl.maximum(x, 0.0)
        # Layer 1: (BM, H) @ (H, H).
        w = tl.load(w1_ptr + net * H * H + hid[:, None] * H + hid[None, :])
        x = tl.maximum(_mm(x, w, PRECISION) + tl.load(b1_ptr + net * H + hid)[None, :], 0.0)
        # Layer 2, density column: a row-wise dot product in fp32.
        w2 = w2_ptr + net * H * (H + 1)
        b2 = b2_ptr + net * (H + 1)
        wd = tl.load(w2 + hid * (H + 1))
        sigma = tl.sum(x * wd[None, :], axis=1) + tl.load(b2)
        tl.store(sigma_ptr + sample, sigma, mask=live)
        if WITH_RGB:
            # Layer 2, the H feature columns (no activation on them).
            w = tl.load(w2 + hid[:, None] * (H + 1) + 1 + hid[None, :])
            feat = _mm(x, w, PRECISION) + tl.load(b2 + 1 + hid)[None, :]
            # Layer 3: features @ W3[:H] + encoded direction @ W3[H:], one sum.
            if HAS_DIR_INDEX:
                drow = tl.load(dir_index_ptr + sample, mask=live, other=0)
            else:
                drow = sample
            d0 = tl.load(dir_ptr + drow * 3 + 0, mask=live, other=0.0)
            d1 = tl.load(dir_ptr + drow * 3 + 1, mask=live, other=0.0)
            d2 = tl.load(dir_ptr + drow * 3 + 2, mask=live, other=0.0)
            denc, drow_w, dvalid = _encoding(d0, d1, d2, LD, CD)
            w3 = w3_ptr + net * (H + 3 + 6 * LD) * H
            w = tl.load(w3 + hid[:, None] * H + hid[None, :])
            wdir = tl.load(w3 + (H + drow_w[:, None]) * H + hid[None, :], mask=dvalid[:, None], other=0.0)
            x = _mm(feat, w, PRECISION) + _mm(denc, wdir, PRECISION) + tl.load(b3_ptr + net * H + hid)[None, :]
            x = tl.maximum(x, 0.0)
            # Layer 4: (BM, H) @ (H, 16), three real columns, then the sigmoid.
            out = tl.arange(0, 16)
            w = tl.load(w4_ptr + net * H * 3 + hid[:, None] * 3 + out[None, :], mask=out[None, :] < 3, other=0.0)
            b4 = tl.load(b4_ptr + net * 3 + out, mask=out < 3, other=0.0)
            rgb = tl.sigmoid(_mm(x, w, PRECISION) + b4[None, :])
            tl.store(rgb_ptr + sample[:, None] * 3 + out[None, :], rgb, mask=live[:, None] & (out[None, :] < 3))


def _pow2_at_least(n: int, floor: int = 16) -> int:
    return max(floor, 1 << (n - 1).bit_length())


def interpreted() -> bool:
    """Whether the kernels were built for the Triton interpreter (``TRITON_INTERPRET=1`` when
    this module was imported): they then take CPU tensors."""
    return not isinstance(_tiny_mlp_kernel, triton.runtime.jit.JITFunction)


def tile_table(net_index: Tensor, num_nets: int, block_rows: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Samples sorted by network and cut into tiles, all on ``net_index``'s device, no sync.

    Args:
        net_index: (N,) int32 or int64 networks in [0, num_nets], any order; ``num_nets`` marks
            an unused slot (the fused renderer's), which no tile holds.
    Returns:
        order (N,) int64 sample indices sorted by network; tile_net, tile_start, tile_end (T,)
        int32/int64: tile ``t`` holds ``order[tile_start[t]:tile_end[t]]``, all of network
        ``tile_net[t]``. ``T = ceil(N / block_rows) + min(N, num_nets)`` bounds the real tile
        count; the tiles beyond the real ones are empty (start == end).
    """
    device, n = net_index.device, int(net_index.shape[0])
    _, order = torch.sort(net_index.to(torch.int32))
    counts = torch.zeros(num_nets + 1, dtype=torch.int64, device=device)
    counts.index_add_(0, net_index.long(), torch.ones_like(net_index, dtype=torch.int64))
    counts = counts[:num_nets]
    tiles = (counts + block_rows - 1) // block_rows
    tiles_end = torch.cumsum(tiles, 0)
    run_end = torch.cumsum(counts, 0)
    total = -(-n // block_rows) + min(n, num_nets)
    t = torch.arange(total, device=device)
    tile_net = torch.searchsorted(tiles_end, t, right=True).clamp_max(num_nets - 1)
    first_tile = tiles_end.index_select(0, tile_net) - tiles.index_select(0, tile_net)
    run_stop = run_end.index_select(0, tile_net)
    start = run_stop - counts.index_select(0, tile_net) + (t - first_tile) * block_rows
    end = torch.minimum(start + block_rows, run_stop)
    start = torch.minimum(start, end)  # tiles past the last real one: empty
    return order, tile_net.to(torch.int32), start, end


class TritonBackend(DensityFirstBackend):
    """Grouped evaluation by the fused Triton kernel (see the module docstring)."""

    name = "triton"
    differentiable = False

    def __init__(self, precision: str = "tf32", block_rows: int = 64, num_warps: int = 4) -> None:
        """``precision``: one of :data:`PRECISIONS`; ``block_rows``: samples per program (a
        power of two >= 16); ``num_warps``: warps per program on the GPU."""
        if precision not in PRECISIONS:
            raise ValueError(f"TritonBackend: precision must be one of {PRECISIONS}, got {precision!r}")
        if block_rows < 16 or block_rows & (block_rows - 1):
            raise ValueError(f"TritonBackend: block_rows must be a power of two >= 16, got {block_rows}")
        self.precision, self.block_rows, self.num_warps = precision, block_rows, num_warps
        if precision != "tf32":
            self.name = f"triton_{precision}"
        self.reference = TorchRefBackend()

    def fused_renderer(self, params: MultiNetParams, device: torch.device) -> FusedRenderer | None:
        """March, evaluate and composite on the device (:mod:`kilonerf.kernels.triton_render`)."""
        if not self.applies(params, device):
            return None
        from kilonerf.kernels.triton_render import TritonFusedRenderer

        params.check()

        def evaluate(net: Tensor, local: Tensor, dirs: Tensor, ray: Tensor, sigma: Tensor, rgb: Tensor) -> None:
            run_tiny_mlp(params, net, local, dirs, ray, sigma, rgb, self.precision, self.block_rows, self.num_warps)

        return TritonFusedRenderer(params.num_nets, evaluate)

    def applies(self, params: MultiNetParams, device: torch.device, inputs: tuple[Tensor, ...] = ()) -> bool:
        """Whether the kernel runs these parameters and inputs on ``device`` (else the reference does)."""
        tensors = (*params.weights, *params.biases, *inputs)
        device = torch.device(device)
        if device.type != ("cpu" if interpreted() else "cuda"):
            return False
        same = lambda d: d.type == device.type and (device.index is None or d.index == device.index)  # noqa: E731
        if any(t.dtype != torch.float32 or not same(t.device) for t in tensors):
            return False
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return False
        h = params.hidden
        return h >= 16 and h & (h - 1) == 0

    def _run(
        self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor | None,
        dir_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        n = int(net_index.shape[0])
        if n == 0 or not self.applies(params, local_pos.device, (local_pos,)):
            return self.reference._run(params, net_index, local_pos, dirs, dir_index)
        params.check()
        sigma = local_pos.new_empty(n)
        rgb = local_pos.new_empty(n, 3) if dirs is not None else None
        run_tiny_mlp(params, net_index, local_pos, dirs, dir_index, sigma, rgb, self.precision, self.block_rows,
                     self.num_warps)  # fmt: skip
        return sigma, rgb


def run_tiny_mlp(
    params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor | None, dir_index: Tensor | None,
    sigma: Tensor, rgb: Tensor | None, precision: str, block_rows: int = 64, num_warps: int = 4,
) -> None:  # fmt: skip
    """Launch the kernel: raw density into ``sigma`` (N,) and colour into ``rgb`` (N, 3) (None:
    density only), for inputs as :meth:`GroupedBackend.evaluate` takes them, on the kernel's
    device (see :func:`interpreted`). ``net_index`` may hold ``params.num_nets`` for unused
    slots, whose outputs are left as they were."""
    order, tile_net, start, end = tile_table(net_index, params.num_nets, block_rows)
    w = [t.detach().contiguous() for t in params.weights]
    b = [t.detach().contiguous() for t in params.biases]
    pos = local_pos.detach().contiguous()
    dirs_c = dirs.detach().to(pos).contiguous() if dirs is not None else pos  # pos: an unused pointer
    idx = dir_index.contiguous() if dir_index is not None else order
    lp, ld = params.pos_freqs, params.dir_freqs
    _tiny_mlp_kernel[(int(start.shape[0]),)](
        order, tile_net, start, end, pos, dirs_c, idx, *w, *b, sigma, rgb if rgb is not None else sigma,
        H=params.hidden, LP=lp, LD=ld, CP=_pow2_at_least(3 + 6 * lp), CD=_pow2_at_least(3 + 6 * ld),
        BM=block_rows, WITH_RGB=rgb is not None, HAS_DIR_INDEX=dir_index is not None,
        PRECISION=precision, num_warps=num_warps,
    )  # fmt: skip
