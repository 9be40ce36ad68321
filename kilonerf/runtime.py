"""Process-wide settings that make PyTorch's CPU work faster; the ``kilonerf`` command applies them."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = (1 << 31) - 1


def reuse_freed_memory() -> bool:
    """Ask glibc's allocator to serve blocks of up to 1 GB from its heap and to keep freed heap
    memory for reuse, instead of mapping each large block afresh and unmapping it on free.

    Renders and training steps allocate and free the same tens of megabytes of temporaries
    again and again; with glibc's defaults (blocks over 32 MB always mapped, freed heap top
    trimmed) every reuse page-faults the memory back in and zeroes it: 3 000 to 12 000 faults
    per 100 x 100 view on the pure-torch renderer (about 100 with this setting), ~20% of a
    fast-teacher training step. The cost is that freed memory is not returned to the system
    while the process runs. Called by the ``kilonerf`` command and the fast teacher's trainer.
    Returns False where this is not glibc (nothing changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
