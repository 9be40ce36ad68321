"""The fast CPU backend: the tiny MLPs in C (``csrc/kn_mlp.c``), samples in vector lanes.

Strategy: counting-sort the samples by network, cut each network's run into work items of up
to 256 samples (spread over OpenMP threads), and evaluate 16 samples at a time with the 16
samples in the lanes of one AVX-512 register: each layer is a chain of FMAs of a sample
vector with a broadcast weight, into 16 (or 3, or 1) register accumulators. The encoding is
computed once per block (double-angle recurrence in double precision, equal to the
reference's sinf to within an ulp). Nothing is padded except the last block of each run.

Training: with autograd recording into the parameters, the forward runs in fp32 and the
parameters' gradients come from ``csrc/kn_mlp_grad.c`` (:mod:`kilonerf.kernels.cpu_train`).
Inputs that it does not handle (not CPU float32, another architecture than the paper's
32 / 10 / 4, gradients into the positions or directions, a density-only evaluation recorded
for training) go to the pure-torch reference.

Precision (``CpuFusedBackend.precision``, queryable): ``fp32`` everywhere, or bf16
(``csrc/kn_mlp_bf16.c``: bf16 products, fp32 accumulation; inputs, encodings and activations
rounded to bf16 once per block, weights once per network) on AMX tiles (``bf16-amx``) or with
AVX512-BF16's VDPBF16PS (``bf16-avx512``) where the CPU has them. Chosen at run time by
``KILONERF_CPU_PRECISION`` or the constructor's argument (:data:`PRECISIONS`); ``auto`` is
``bf16-amx`` where the CPU and OS allow AMX (:data:`AUTO_PRECISION`), else ``fp32``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from kilonerf.errors import KiloNerfError
from kilonerf.kernels.base import DensityFirstBackend, MultiNetParams
from kilonerf.kernels.cpu_render import CpuFusedRenderer, check_struct_size
from kilonerf.kernels.cpu_train import check_rc, compiled_mlp
from kilonerf.kernels.fused import FusedRenderer
from kilonerf.kernels.native import load_library, pointer_array, ptr
from kilonerf.kernels.torch_ref import TorchRefBackend

ARCH = (32, 10, 4)
"""(hidden, position L, direction L) compiled into the kernels (see csrc/kn.h)."""

PRECISIONS = ("auto", "fp32", "bf16", "bf16-amx", "bf16-avx512")
"""Accepted settings; ``bf16`` is the faster engine there is (AMX, else AVX512-BF16)."""
PRECISION_ENV = "KILONERF_CPU_PRECISION"
AUTO_PRECISION = "bf16-amx"
"""What ``auto`` picks where AMX-BF16 runs (docs/benchmarks.md: the PSNR check). Not
``bf16-avx512``: on the Xeon it was measured on it is slower than fp32 (VDPBF16PS issues every
~1.8 cycles against two fp32 FMAs per cycle); its speed on Zen 4 is unmeasured."""
_ENGINES = {"bf16-avx512": 1, "bf16-amx": 2}
"""Bits of ``kn_bf16_engines()`` (KN_BF16_AVX512, KN_BF16_AMX in csrc/kn.h)."""

AMX_TILES = 14
"""bf16 16 x 32 tiles per network (KN_AMX_TILES in csrc/kn.h; layout in csrc/kn_mlp_bf16.c)."""
_TILE_SPLITS = [(64, 32), (32, 32), (32, 48), (64, 32), (32, 16)]
"""Per layer: inputs and outputs padded with zeros to whole tiles (32 inputs x 16 outputs)."""


def amx_tiles(weights: tuple[Tensor, ...]) -> Tensor:
    """The five (num_nets, in, out) weights as (num_nets, 14, 16, 32) bf16 AMX A tiles: per
    layer, tiles [out chunk of 16][in chunk of 32] of W^T, zero padded (round to nearest even)."""
    k = int(weights[0].shape[0])
    tiles = []
    for w, (fan_in, fan_out) in zip(weights, _TILE_SPLITS):
        wt = w.detach().new_zeros(k, fan_out, fan_in)
        wt[:, : w.shape[2], : w.shape[1]] = w.detach().transpose(1, 2)
        wt = wt.reshape(k, fan_out // 16, 16, fan_in // 32, 32).permute(0, 1, 3, 2, 4)
        tiles.append(wt.reshape(k, -1, 16, 32))
    out = torch.cat(tiles, 1).to(torch.bfloat16).contiguous()
    assert out.shape[1] == AMX_TILES
    return out


def resolve_precision(precision: str | None, engines: int) -> str:
    """``precision`` (else ``$KILONERF_CPU_PRECISION``, else ``auto``) as ``fp32``, ``bf16-amx``
    or ``bf16-avx512`` for a machine running the bf16 ``engines`` (bits of :data:`_ENGINES`);
    KiloNerfError if unknown or not runnable here."""
    source = "precision" if precision else PRECISION_ENV
    value = precision or os.environ.get(PRECISION_ENV) or "auto"
    if value not in PRECISIONS:
        raise KiloNerfError(f"{source}: '{value}' is not one of {', '.join(PRECISIONS)}")
    if value == "auto":
        return AUTO_PRECISION if engines & _ENGINES[AUTO_PRECISION] else "fp32"
    if value == "bf16":
        value = "bf16-amx" if engines & _ENGINES["bf16-amx"] else "bf16-avx512"
    if value != "fp32" and not engines & _ENGINES[value]:
        raise KiloNerfError(f"{source}: {value} needs {value[5:].upper()}-BF16, which this CPU (or OS) does not offer")
    return value


def fits_kernels(params: MultiNetParams) -> bool:
    """Whether the kernels compute these parameters: float32 CPU tensors of the compiled
    architecture (:data:`ARCH`); a malformed architecture is a ValueError."""
    tensors = (*params.weights, *params.biases)
    if (params.hidden, params.pos_freqs, params.dir_freqs) != ARCH:
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    params.check()
    return True


def native_params(params: MultiNetParams) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None:
    """Contiguous float32 CPU weights and biases for the forward-only kernels, or None if they
    do not apply to these parameters (unfit, or autograd recording into them)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*params.weights, *params.biases)):
        return None
    if not fits_kernels(params):
        return None
    w = tuple(t.detach().contiguous() for t in params.weights)
    b = tuple(t.detach().contiguous() for t in params.biases)
    return w, b


class CpuFusedBackend(DensityFirstBackend):
    """Grouped evaluation by the compiled C kernels (see the module docstring)."""

    name = "cpu"
    differentiable = True
    """Gradients reach the parameters through the compiled kernels (:mod:`kilonerf.kernels.cpu_train`,
    fp32 whatever the rendering precision); the inputs' through the reference, which also
    trains a density-only evaluation."""

    def __init__(self, num_threads: int | None = None, precision: str | None = None) -> None:
        """``num_threads``: OpenMP threads (default: ``torch.get_num_threads()`` at each call);
        ``precision``: one of :data:`PRECISIONS` (default ``$KILONERF_CPU_PRECISION`` or
        ``auto``); a bf16 engine the CPU lacks is an error."""
        self.lib = load_library()
        check_struct_size(self.lib)  # the fused renderer's ctypes mirror must match the C struct
        self.num_threads = num_threads
        self.reference = TorchRefBackend()
        self.bf16_engines = [name for name, bit in _ENGINES.items() if self.lib.kn_bf16_engines() & bit]
        """The bf16 engines this machine runs (``bf16-avx512``, ``bf16-amx``)."""
        self.precision = resolve_precision(precision, sum(_ENGINES[e] for e in self.bf16_engines))
        """The arithmetic the kernels run: ``fp32``, ``bf16-amx`` or ``bf16-avx512``."""
        self._tiles: tuple[tuple[Tensor, ...], tuple[tuple[int, int], ...], Tensor] | None = None

    def bf16_tiles(self, weights: tuple[Tensor, ...]) -> Tensor | None:
        """The weights' AMX tiles when this backend runs bf16 (packed once per weight version), else None."""
        if self.precision == "fp32":
            return None
        # The cache holds the weights it was packed from, so that their memory cannot be reused
        # by other weights at the same address while the tiles are kept.
        key = tuple((t.data_ptr(), t._version) for t in weights)
        if self._tiles is None or self._tiles[1] != key:
            self._tiles = (weights, key, amx_tiles(weights))
        return self._tiles[2]

    def threads(self) -> int:
        return self.num_threads or torch.get_num_threads()

    def fused_renderer(self, params: MultiNetParams, device: torch.device) -> FusedRenderer | None:
        """``kn_render`` for float32 CPU parameters of the compiled architecture."""
        prepared = native_params(params) if torch.device(device).type == "cpu" else None
        if prepared is None:
            return None
        tiles = self.bf16_tiles(prepared[0])
        return CpuFusedRenderer(self.lib, prepared[0], prepared[1], params.num_nets, self.threads(), tiles,
                                self.precision == "bf16-amx")  # fmt: skip

    def _run(
        self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor | None,
        dir_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        if dirs is not None and dir_index is not None:
            dirs = dirs.index_select(0, dir_index)
        inputs = [local_pos] + ([] if dirs is None else [dirs])
        on_cpu = all(t.device.type == "cpu" for t in [net_index, *inputs])
        input_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        param_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (*params.weights, *params.biases))
        if param_grad and dirs is not None and on_cpu and not input_grad and fits_kernels(params):
            return compiled_mlp(self.lib, self.threads(), params, net_index, local_pos, dirs)
        prepared = native_params(params)
        if prepared is None or input_grad or not on_cpu:
            if dirs is None:
                return self.reference.density(params, net_index, local_pos), None
            return self.reference.evaluate(params, net_index, local_pos, dirs)
        n = int(net_index.shape[0])
        if n >= 2**31:
            raise ValueError(f"{self.name} backend: {n} samples in one call (at most 2^31 - 1)")
        w, b = prepared
        net = net_index.to(torch.int64).contiguous()
        pos = local_pos.detach().to(torch.float32).contiguous()
        d = None if dirs is None else dirs.detach().to(torch.float32).contiguous()
        sigma = pos.new_empty(n)
        rgb = None if d is None else pos.new_empty(n, 3)
        tiles = self.bf16_tiles(w)
        rc = self.lib.kn_eval(
            pointer_array(w), pointer_array(b), None if tiles is None else ptr(tiles), int(self.precision == "bf16-amx"),
            params.num_nets, ptr(net), ptr(pos),
            None if d is None else ptr(d), n, ptr(sigma), None if rgb is None else ptr(rgb), self.threads(),
        )  # fmt: skip
        check_rc(rc, f"{self.name} backend", params.num_nets, n)
        return sigma, rgb
