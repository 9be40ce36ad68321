"""The fast CPU backend: the tiny MLPs in C (``csrc/kn_mlp.c``), samples in vector lanes.

Strategy: counting-sort the samples by network, cut each network's run into work items of up
to 256 samples (spread over OpenMP threads), and evaluate 16 samples at a time with the 16
samples in the lanes of one AVX-512 register: each layer is a chain of FMAs of a sample
vector with a broadcast weight, into 16 (or 3, or 1) register accumulators. The encoding is
computed once per block (double-angle recurrence in double precision, equal to the
reference's sinf to within an ulp). Nothing is padded except the last block of each run.

Forward only. Inputs that it does not handle (not CPU float32, another architecture than the
paper's 32 / 10 / 4, or autograd recording) go to the pure-torch reference, so training keeps
working through it.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from kilonerf.kernels.base import DensityFirstBackend, MultiNetParams
from kilonerf.kernels.cpu_render import CpuFusedRenderer, check_struct_size
from kilonerf.kernels.fused import FusedRenderer
from kilonerf.kernels.native import load_library
from kilonerf.kernels.torch_ref import TorchRefBackend

ARCH = (32, 10, 4)
"""(hidden, position L, direction L) compiled into the kernels (see csrc/kn.h)."""


def _ptr(t: Tensor) -> int:
    return int(t.data_ptr())


def pointer_array(tensors: tuple[Tensor, ...]) -> ctypes.Array:
    """A C array of the tensors' data pointers (the tensors must stay alive while it is used)."""
    return (ctypes.c_void_p * len(tensors))(*[_ptr(t) for t in tensors])


def native_params(params: MultiNetParams) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None:
    """Contiguous float32 CPU weights and biases for the kernels, or None if the kernels do
    not apply to these parameters (the caller then uses the reference)."""
    tensors = (*params.weights, *params.biases)
    if (params.hidden, params.pos_freqs, params.dir_freqs) != ARCH:
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    params.check()
    w = tuple(t.detach().contiguous() for t in params.weights)
    b = tuple(t.detach().contiguous() for t in params.biases)
    return w, b


class CpuFusedBackend(DensityFirstBackend):
    """Grouped evaluation by the compiled C kernels (see the module docstring)."""

    name = "cpu"
    differentiable = False

    def __init__(self, num_threads: int | None = None) -> None:
        """``num_threads``: OpenMP threads (default: ``torch.get_num_threads()`` at each call)."""
        self.lib = load_library()
        check_struct_size(self.lib)  # the fused renderer's ctypes mirror must match the C struct
        self.num_threads = num_threads
        self.reference = TorchRefBackend()

    def threads(self) -> int:
        return self.num_threads or torch.get_num_threads()

    def fused_renderer(self, params: MultiNetParams, device: torch.device) -> FusedRenderer | None:
        """``kn_render`` for float32 CPU parameters of the compiled architecture."""
        prepared = native_params(params) if torch.device(device).type == "cpu" else None
        if prepared is None:
            return None
        return CpuFusedRenderer(self.lib, prepared[0], prepared[1], params.num_nets, self.threads())

    def _run(
        self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor | None,
        dir_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        if dirs is not None and dir_index is not None:
            dirs = dirs.index_select(0, dir_index)
        prepared = native_params(params)
        inputs = [local_pos] + ([] if dirs is None else [dirs])
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        if prepared is None or needs_grad or any(t.device.type != "cpu" for t in [net_index, *inputs]):
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
        rc = self.lib.kn_eval(
            pointer_array(w), pointer_array(b), params.num_nets, _ptr(net), _ptr(pos),
            None if d is None else _ptr(d), n, _ptr(sigma), None if rgb is None else _ptr(rgb), self.threads(),
        )  # fmt: skip
        if rc == -1:
            raise ValueError(f"{self.name} backend: network index outside [0, {params.num_nets})")
        if rc != 0:
            raise MemoryError(f"{self.name} backend: out of memory for {n} samples")
        return sigma, rgb
