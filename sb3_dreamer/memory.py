"""Process memory settings that make CPU updates faster, and replay arrays that cost memory only
where written (:func:`lazy_zeros`).

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
import mmap
import os
import platform

import numpy as np

#: ``mallopt`` parameter numbers from glibc's ``malloc.h``.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

#: Free memory glibc may keep at the top of the heap before returning it to the OS.
TRIM_THRESHOLD_BYTES = 1 << 30
#: Extra memory requested from the OS whenever the heap grows.
TOP_PAD_BYTES = 64 << 20
#: Environment variable that turns :func:`retain_freed_memory` off when set to ``0``.
OPT_OUT_VARIABLE = "SB3_DREAMER_RETAIN_FREED_MEMORY"

_retained = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (process-wide, idempotent).

    Large blocks come from the heap rather than from separate ``mmap`` calls, and up to
    :data:`TRIM_THRESHOLD_BYTES` of free heap stays mapped, for every allocation of the process
    from then on (not only Dreamer's): its resident memory stays near its peak instead of shrinking
    after large objects are freed. ``Dreamer`` calls this on CPU devices; set the environment
    variable :data:`OPT_OUT_VARIABLE` to ``0`` to keep glibc's defaults.

    :return: whether the settings are in effect; ``False`` when opted out, off Linux/glibc (this
        only tunes glibc's allocator), or if glibc refused a setting (those before it stay applied)
    """
    global _retained
    if _retained:
        return True
    if os.environ.get(OPT_OUT_VARIABLE) == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (_M_TOP_PAD, TOP_PAD_BYTES))
    _retained = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    return _retained


def lazy_zeros(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A zero array in its own anonymous memory map: a page costs memory only once written, and
    the whole map goes back to the operating system when the array is freed.

    For the replay buffer's rows, most of which stay unwritten for a long time. ``np.zeros`` gives
    the same only while large blocks come from fresh ``mmap`` calls; after
    :func:`retain_freed_memory` they come from the heap, where ``calloc`` must clear a reused
    block and so commits all of it (a second buffer built in the process would take its full
    capacity in memory at once).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)
