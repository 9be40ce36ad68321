"""The compiled ``cpu`` backend's fused renderer: march, grouped evaluation and compositing in C.

``csrc/kn_render.c`` does per tile of consecutive rays what :func:`kilonerf.render.fast.render_fast`
does with torch operations (same candidates, passes and compositing; see that module), so
that per-pass bookkeeping (gathering candidates, sorting by network, scattering results)
costs next to nothing beside the MLPs. The C argument struct is mirrored in ctypes below; its
size is checked against the compiled one when the ``cpu`` backend loads the library.
"""

from __future__ import annotations

import ctypes

import torch

from kilonerf.kernels.fused import PHASES, FusedGrid, FusedOccupancy, FusedRays, FusedRenderer, FusedResult
from kilonerf.kernels.native import NativeUnavailable

_F3 = ctypes.c_float * 3
_I3 = ctypes.c_int32 * 3
_P5 = ctypes.c_void_p * 5


class _RenderArgs(ctypes.Structure):
    """Mirror of ``kn_render_args`` in csrc/kn_render.c (field order and types must match)."""

    _fields_ = [
        ("w", _P5), ("b", _P5), ("wt", ctypes.c_void_p), ("bf16_amx", ctypes.c_int32),
        ("num_nets", ctypes.c_int64),
        ("grid_min", _F3), ("grid_max", _F3), ("grid_res", _I3),
        ("occ_bits", ctypes.c_void_p), ("occ_min", _F3), ("occ_max", _F3), ("occ_res", _I3),
        ("occ_same_box", ctypes.c_int32),
        ("coarse", ctypes.c_void_p), ("coarse_res", _I3), ("coarse_cell", _F3),
        ("n_rays", ctypes.c_int64),
        ("origins", ctypes.c_void_p), ("dirs", ctypes.c_void_p), ("near", ctypes.c_void_p), ("step", ctypes.c_void_p),
        ("k_lo", ctypes.c_void_p), ("k_count", ctypes.c_void_p),
        ("ert_threshold", ctypes.c_float), ("samples_per_pass", ctypes.c_int32),
        ("leaky_density", ctypes.c_int32), ("count_candidates", ctypes.c_int32),
        ("tile_rays", ctypes.c_int32), ("nthreads", ctypes.c_int32),
        ("rgb", ctypes.c_void_p), ("depth", ctypes.c_void_p), ("acc", ctypes.c_void_p),
        ("evaluated", ctypes.c_int64), ("candidates", ctypes.c_int64), ("passes", ctypes.c_int64),
        ("blocks", ctypes.c_int64), ("seconds", ctypes.c_double * 4),
    ]  # fmt: skip


def check_struct_size(lib: ctypes.CDLL) -> None:
    """The compiled ``kn_render_args`` and its ctypes mirror must agree byte for byte."""
    compiled, mirrored = int(lib.kn_render_args_size()), ctypes.sizeof(_RenderArgs)
    if compiled != mirrored:
        raise NativeUnavailable(f"kn_render_args is {compiled} bytes in C but {mirrored} in its ctypes mirror")


def default_tile(n_rays: int, threads: int) -> int:
    """Rays per tile: at least 4 tiles per thread (balance), at most 8192 rays (memory: the
    per-pass sample buffers of a tile stay in L2), at least 256 (long per-network runs)."""
    return max(256, min(8192, -(-n_rays // (4 * max(threads, 1)))))


class CpuFusedRenderer(FusedRenderer):
    """``kn_render`` over prepared (contiguous float32 CPU) weights and biases; with ``tiles``
    (the weights as bf16 tiles, ``cpu.amx_tiles``) the MLPs run in bf16, on AMX if ``amx``."""

    def __init__(self, lib: ctypes.CDLL, weights: tuple[torch.Tensor, ...], biases: tuple[torch.Tensor, ...],
                 num_nets: int, threads: int, tiles: torch.Tensor | None = None, amx: bool = False) -> None:  # fmt: skip
        self.lib, self.weights, self.biases, self.num_nets, self.threads = lib, weights, biases, num_nets, threads
        self.tiles, self.amx = tiles, amx

    def render(
        self, grid: FusedGrid, occupancy: FusedOccupancy | None, rays: FusedRays, ert_threshold: float,
        samples_per_pass: int, count_candidates: bool, density_activation: str = "relu", tile_rays: int | None = None,
    ) -> FusedResult:  # fmt: skip
        o, d = rays.origins.contiguous(), rays.dirs.contiguous()
        n = int(o.shape[0])
        near_c, step_c = rays.near.contiguous(), rays.step.contiguous()
        k_lo_c, k_count_c = rays.k_lo.to(torch.int64).contiguous(), rays.k_count.to(torch.int64).contiguous()
        rgb, depth, acc = o.new_zeros(n, 3), o.new_zeros(n), o.new_zeros(n)
        bbox = grid.bbox.detach().float()
        pointers = lambda ts: _P5(*[int(t.data_ptr()) for t in ts])  # noqa: E731
        args = _RenderArgs(
            w=pointers(self.weights), b=pointers(self.biases), num_nets=self.num_nets,
            wt=None if self.tiles is None else self.tiles.data_ptr(), bf16_amx=int(self.amx),
            grid_min=_F3(*bbox[0].tolist()), grid_max=_F3(*bbox[1].tolist()), grid_res=_I3(*grid.res),
            n_rays=n, origins=o.data_ptr(), dirs=d.data_ptr(), near=near_c.data_ptr(), step=step_c.data_ptr(),
            k_lo=k_lo_c.data_ptr(), k_count=k_count_c.data_ptr(),
            ert_threshold=float(ert_threshold), samples_per_pass=int(samples_per_pass),
            leaky_density=int(density_activation == "leaky_relu"), count_candidates=int(count_candidates),
            tile_rays=int(tile_rays or default_tile(n, self.threads)), nthreads=self.threads,
            rgb=rgb.data_ptr(), depth=depth.data_ptr(), acc=acc.data_ptr(),
        )  # fmt: skip
        bits = coarse = None  # referenced until the call returns: the C code reads them
        if occupancy is not None:
            bits = occupancy.bits.cpu().contiguous()
            obox = occupancy.bbox.float()
            args.occ_bits = bits.data_ptr()
            args.occ_min, args.occ_max = _F3(*obox[0].tolist()), _F3(*obox[1].tolist())
            args.occ_res = _I3(*occupancy.res)
            args.occ_same_box = int(torch.equal(obox, bbox))
            coarse = occupancy.coarse.to(device="cpu", dtype=torch.uint8).contiguous()
            args.coarse = coarse.data_ptr()
            args.coarse_res = _I3(*coarse.shape)
            args.coarse_cell = _F3(*occupancy.coarse_cell.float().tolist())
        rc = self.lib.kn_render(ctypes.byref(args))
        if rc != 0:
            raise MemoryError(f"native renderer: out of memory for tiles of {args.tile_rays} rays")
        return FusedResult(
            rgb=rgb, depth=depth, acc=acc, evaluated=int(args.evaluated), candidates=int(args.candidates),
            passes=int(args.passes), blocks=int(args.blocks),
            seconds={name: float(args.seconds[i]) for i, name in enumerate(PHASES)},
        )
