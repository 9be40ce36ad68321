"""Build and load the native CPU kernels (``kilonerf/kernels/csrc``) at first use.

Why compile at run time with the system's C compiler instead of a setuptools extension: the
package stays pure Python to install (no build isolation pulling a second torch into the
build environment, no ninja), and ``-march=native`` can target the machine it runs on.

The shared library is cached under ``$KILONERF_CACHE`` (default ``$XDG_CACHE_HOME/kilonerf``
or ``~/.cache/kilonerf``), named by a hash of the sources, the flags, the compiler's version
and the CPU's feature flags, so a changed source, compiler or machine gets a fresh build.
It is written to a temporary name and renamed into place, so concurrent first uses are safe.

The functions take contiguous float32 / int64 CPU tensors through ctypes; ctypes releases
the GIL during the call, and the kernels run their own OpenMP threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

from kilonerf.errors import KiloNerfError
from kilonerf.kernels.perf import cpuinfo

SRC_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = [
    ("kn_mlp.c", "kn_mlp16.o", ["-ffp-contract=fast", "-DKN_LANES=16"]),
    ("kn_mlp.c", "kn_mlp8.o", ["-ffp-contract=fast", "-DKN_LANES=8"]),
    ("kn_mlp_bf16.c", "kn_mlp_bf16.o", ["-ffp-contract=fast"]),
    ("kn_mlp_grad.c", "kn_mlp_grad.o", ["-ffp-contract=fast"]),
    ("kn_render.c", "kn_render.o", ["-ffp-contract=off"]),
    ("kn_grid.c", "kn_grid.o", []),
    ("kn_adam.c", "kn_adam.o", []),
]
"""(source, object, flags): the MLP wants FMAs and is built for 16- and 8-sample blocks; the
bf16 MLP compiles to stubs where ``-march=native`` has no AVX512-BF16 (and without AMX where
it has no AMX-BF16), so the engines follow the build machine's CPU flags; the renderer
must not contract, so that sample positions are computed with exactly the arithmetic (and
rounding) of the torch renderer; the teacher's grid lookups (``kn_grid.c``) and the row-wise
Adam steps (``kn_adam.c``) are compared with torch within a tolerance."""
COMMON_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-std=gnu11", "-fno-math-errno"]


class NativeUnavailable(KiloNerfError):
    """No C compiler, or the kernels failed to compile or load (the message says which)."""


class NoCompiler(NativeUnavailable):
    """No C compiler on this machine: the one case where falling back is expected (tests skip
    on it; any other NativeUnavailable is a bug to report)."""


def cache_dir() -> Path:
    env = os.environ.get("KILONERF_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kilonerf"


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise NoCompiler("no C compiler found (install gcc, or set CC)")
    return cc


def _cpu_flags() -> str:
    return cpuinfo("flags") or platform.processor() or platform.machine()


def _build_key(cc: str) -> str:
    h = hashlib.sha256()
    for path in sorted([*SRC_DIR.glob("*.c"), *SRC_DIR.glob("*.h")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(repr((SOURCES, COMMON_FLAGS)).encode())
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"C compiler '{cc}' does not run: {exc}") from None
    h.update(version.encode() + _cpu_flags().encode())
    return h.hexdigest()[:20]


def _compile(cc: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="kilonerf-build-") as tmp:
        objs = []
        for name, obj_name, flags in SOURCES:
            obj = Path(tmp) / obj_name
            cmd = [cc, *COMMON_FLAGS, *flags, "-c", str(SRC_DIR / name), "-o", str(obj)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise NativeUnavailable(f"compiling {SRC_DIR / name} failed: {proc.stderr.strip()[-800:]}")
            objs.append(str(obj))
        lib = Path(tmp) / "kn.so"
        proc = subprocess.run([cc, "-shared", "-fopenmp", *objs, "-o", str(lib), "-lm"], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        if proc.returncode != 0:
            raise NativeUnavailable(f"linking the native kernels failed: {proc.stderr.strip()[-800:]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        shutil.copyfile(lib, staged)
        os.replace(staged, out)


_P = ctypes.c_void_p
_I64 = ctypes.c_int64


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """The compiled kernels (built on first use); NativeUnavailable if that is impossible."""
    cc = _compiler()
    path = cache_dir() / f"kn-{_build_key(cc)}.so"
    if not path.is_file():
        try:
            _compile(cc, path)
        except (OSError, subprocess.SubprocessError) as exc:
            raise NativeUnavailable(f"cannot build the native kernels into {path.parent}: {exc}") from None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise NativeUnavailable(f"{path}: cannot load the native kernels ({exc})") from None
    lib.kn_eval.restype = ctypes.c_int
    lib.kn_eval.argtypes = [_P, _P, _P, ctypes.c_int, _I64, _P, _P, _P, _I64, _P, _P, ctypes.c_int]
    lib.kn_mlp_backward.restype = ctypes.c_int
    lib.kn_mlp_backward.argtypes = [_P, _P, _I64, _P, _P, _P, _P, _P, _I64, _P, _P, ctypes.c_int]
    lib.kn_bf16_engines.restype = ctypes.c_int
    lib.kn_bf16_engines.argtypes = []
    lib.kn_render.restype = ctypes.c_int
    lib.kn_render_args_size.restype = _I64
    lib.kn_render_args_size.argtypes = []
    _INT = ctypes.c_int
    lib.kn_grid_lerp.restype = None
    lib.kn_grid_lerp.argtypes = [_P, _I64, _P, _P, _I64, _P, _INT]
    lib.kn_grid_lerp_backward.restype = None
    lib.kn_grid_lerp_backward.argtypes = [_P, _I64, _P, _P, _I64, _P, _I64, _INT]
    _D = ctypes.c_double
    lib.kn_row_adam.restype = _I64
    lib.kn_row_adam.argtypes = [_P, _P, _P, _P, _I64, _I64, _D, _D, _D, _D, _D, _D, _INT]
    lib.kn_indexed_adam.restype = None
    lib.kn_indexed_adam.argtypes = [_P, _P, _P, _P, _P, _I64, _I64, _P, _P, _D, _D, _D, _D, _INT]
    return lib


@lru_cache(maxsize=1)
def _library_or_none() -> ctypes.CDLL | None:
    try:
        return load_library()
    except NativeUnavailable as exc:  # no compiler included: training then runs slower, say so once
        warnings.warn(f"compiled training kernels unavailable, using torch instead: {exc}", stacklevel=4)
        return None


def compiled_for(*tensors: torch.Tensor, native: bool | None = None) -> ctypes.CDLL | None:
    """The compiled library where it applies to ``tensors`` (CPU float32) and ``native`` allows
    it (None: wherever it applies; False: never; True: required, RuntimeError otherwise). For
    kernels with a torch twin of the same semantics (``grid_ops``, ``adam``)."""
    fits = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    lib = _library_or_none() if fits and native is not False else None
    if native and lib is None:
        raise RuntimeError("the compiled kernels do not apply here (they need CPU float32 tensors and a C compiler)")
    return lib


def ptr(t: torch.Tensor) -> int:
    """The address of a tensor's data, for the ctypes signatures above."""
    return int(t.data_ptr())


def pointer_array(tensors: Sequence[torch.Tensor]) -> ctypes.Array:
    """A C array of the tensors' data pointers (the tensors must stay alive while it is used)."""
    return (ctypes.c_void_p * len(tensors))(*[ptr(t) for t in tensors])
