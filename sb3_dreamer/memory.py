"""Process memory settings that make CPU updates faster.

A Dreamer update allocates and frees the same large activation buffers (tens of MB each for
pixel batches) hundreds of times. glibc's ``malloc`` serves blocks above its ``mmap`` threshold
(at most 32 MB) with fresh ``mmap`` calls and returns freed memory at the top of the heap to the
operating system, so every update faults those pages in again and the kernel zero-fills them:
about 30,000 page faults per size-``T`` pixel update. :func:`retain_freed_memory` tells glibc to
keep freed memory in the process instead, which cuts them to about 4,500 and the update time by
6-8% (measured in ``docs/benchmarks.md``, "Optimisations kept").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: ``mallopt`` parameter numbers from glibc's ``malloc.h``.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

#: Free memory glibc may keep at the top of the heap before returning it to the OS.
TRIM_THRESHOLD_BYTES = 1 << 30
#: Extra memory requested from the OS whenever the heap grows.
TOP_PAD_BYTES = 64 << 20

_retained = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (process-wide, idempotent).

    Large blocks come from the heap rather than from separate ``mmap`` calls, and up to
    :data:`TRIM_THRESHOLD_BYTES` of free heap stays mapped. The process's resident memory then
    stays near its peak instead of shrinking between updates. Returns whether the settings are in
    effect: ``False`` off Linux/glibc (other allocators need no such setting or cannot take it).
    """
    global _retained
    if _retained:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    mallopt = ctypes.CDLL(library).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (_M_TOP_PAD, TOP_PAD_BYTES))
    _retained = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    return _retained
