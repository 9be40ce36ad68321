"""The fast renderer's native path: march, grouped evaluation and compositing in C.

``csrc/kn_render.c`` does per tile of consecutive rays what :func:`kilonerf.render.fast.render_fast`
does with torch operations (same candidates, passes and compositing; see that module), so
that per-pass bookkeeping (gathering candidates, sorting by network, scattering results)
costs next to nothing beside the MLPs. Used when the backend is the compiled ``cpu`` one and
the field is a float32 CPU field of the compiled architecture.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import Tensor

from kilonerf.fields.multinet import MultiNetField
from kilonerf.kernels.cpu import CpuFusedBackend, native_params, pointer_array
from kilonerf.occupancy.grid import OccupancyGrid

_F3 = ctypes.c_float * 3
_I3 = ctypes.c_int32 * 3
_P5 = ctypes.c_void_p * 5


class _RenderArgs(ctypes.Structure):
    """Mirror of ``kn_render_args`` in csrc/kn_render.c (field order and types must match)."""

    _fields_ = [
        ("w", _P5), ("b", _P5), ("num_nets", ctypes.c_int64),
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


COARSE_FACTOR = 8
"""Fine voxels per coarse skip cell per axis (as render_fast's candidate search)."""

PHASES = ("march", "sort", "mlp", "composite")
"""The renderer's phases, as timed in ``NativeResult.seconds``."""


@dataclass
class NativeResult:
    rgb: Tensor
    """(N, 3) without background."""
    depth: Tensor
    acc: Tensor
    evaluated: int
    candidates: int
    """-1 unless counted."""
    passes: int
    blocks: int
    """16- or 8-sample MLP blocks evaluated (the last block of a run is 8 wide when it holds <= 8)."""
    seconds: dict[str, float]
    """Thread-seconds per phase (:data:`PHASES`), summed over the threads."""


def native_applies(field: MultiNetField, backend: object, origins: Tensor) -> bool:
    """Whether :func:`render_native` can render these rays."""
    return (
        isinstance(backend, CpuFusedBackend)
        and origins.device.type == "cpu"
        and field.bbox.dtype == torch.float32
        and native_params(field.params()) is not None
    )


def default_tile(n_rays: int, threads: int) -> int:
    """Rays per tile: at least 4 tiles per thread (balance), at most 8192 rays (memory: the
    per-pass sample buffers of a tile stay in L2), at least 256 (long per-network runs)."""
    return max(256, min(8192, -(-n_rays // (4 * max(threads, 1)))))


def render_native(
    field: MultiNetField, occupancy: OccupancyGrid | None, backend: CpuFusedBackend,
    origins: Tensor, dirs: Tensor, near: Tensor, step: Tensor, k_lo: Tensor, k_count: Tensor,
    ert_threshold: float, samples_per_pass: int, count_candidates: bool, tile_rays: int | None = None,
    density_activation: str = "relu",
) -> NativeResult:
    """Render rays whose candidate sample range is already known.

    Args:
        origins, dirs: (N, 3) float32; near, step: (N,) float32; k_lo, k_count: (N,) int64, the
            first sample index and number of samples that may be candidates (render_fast's
            ``_sample_range``).
        count_candidates: also march terminated rays to the end to count their remaining
            candidates (else ``candidates`` is -1).
    Returns:
        :class:`NativeResult`.
    """
    prepared = native_params(field.params())
    assert prepared is not None, "render_native: check native_applies first"
    w, b = prepared
    n = int(origins.shape[0])
    o, d = origins.contiguous(), dirs.contiguous()
    near_c, step_c = near.contiguous(), step.contiguous()
    k_lo_c, k_count_c = k_lo.to(torch.int64).contiguous(), k_count.to(torch.int64).contiguous()
    rgb, depth, acc = o.new_zeros(n, 3), o.new_zeros(n), o.new_zeros(n)
    bbox = field.bbox.detach().float()
    threads = backend.threads()
    args = _RenderArgs(
        w=_P5(*pointer_array(w)), b=_P5(*pointer_array(b)), num_nets=field.num_networks,
        grid_min=_F3(*bbox[0].tolist()), grid_max=_F3(*bbox[1].tolist()), grid_res=_I3(*field.res),
        n_rays=n, origins=o.data_ptr(), dirs=d.data_ptr(), near=near_c.data_ptr(), step=step_c.data_ptr(),
        k_lo=k_lo_c.data_ptr(), k_count=k_count_c.data_ptr(),
        ert_threshold=float(ert_threshold), samples_per_pass=int(samples_per_pass),
        leaky_density=int(density_activation == "leaky_relu"), count_candidates=int(count_candidates),
        tile_rays=int(tile_rays or default_tile(n, threads)), nthreads=threads,
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
        coarse = occupancy.coarse_skip_grid(COARSE_FACTOR).to(device="cpu", dtype=torch.uint8).contiguous()
        args.coarse = coarse.data_ptr()
        args.coarse_res = _I3(*coarse.shape)
        args.coarse_cell = _F3(*(occupancy.voxel_size.float() * COARSE_FACTOR).tolist())
    rc = backend.lib.kn_render(ctypes.byref(args))
    if rc != 0:
        raise MemoryError(f"native renderer: out of memory for tiles of {args.tile_rays} rays")
    return NativeResult(
        rgb=rgb, depth=depth, acc=acc, evaluated=int(args.evaluated), candidates=int(args.candidates),
        passes=int(args.passes), blocks=int(args.blocks), seconds={name: float(args.seconds[i]) for i, name in enumerate(PHASES)},
    )
