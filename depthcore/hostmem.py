"""Host memory: keep freed tensor memory in the process for the next training step.

glibc hands allocations above a threshold (128 KiB, raised on the fly to at most 32 MiB) to
mmap and returns them to the OS on free, and trims the heap top when it exceeds twice that. A
CPU training step allocates and frees the same few hundred megabytes of activations every
step, so every step page-faults them in again: at 96×320, batch 4, 10 000-40 000 faults per
step. Raising both thresholds keeps the memory in the heap: after three steps about 30 faults
per step, for a resident set about 5 % larger (1.96 GB against 1.85-1.91 GB), stable over the
run. The setting is process-wide; glibc only (Linux), elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Largest mmap threshold every 64-bit glibc accepts (DEFAULT_MMAP_THRESHOLD_MAX); newer ones
# accept more, tried first.
_MMAP_MAX_PORTABLE = 32 * 2**20


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once). True if applied."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_ok = any(mallopt(_M_MMAP_THRESHOLD, v) for v in (2**30, _MMAP_MAX_PORTABLE))
    trim_ok = bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return mmap_ok and trim_ok
