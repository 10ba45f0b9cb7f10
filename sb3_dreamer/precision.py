"""Mixed-precision selection: bfloat16 autocast only where the hardware runs it fast.

During training updates, matmuls and convolutions run in the compute dtype under
``torch.autocast``; every distribution, loss, KL, two-hot and return statistic casts its inputs
back to float32 (see :mod:`sb3_dreamer.distributions`), and parameters and optimizer states stay
float32. Acting (``predict`` and collection) always runs in float32: at batch sizes of a few
envs, casting the weights would cost more than the matmuls save.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "bf16", "auto")

#: CPU ISA extensions with native bfloat16 dot products (others emulate bf16 slowly).
_FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU advertises native bfloat16 matmul instructions (Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return any(flag in flags for flag in _FAST_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Map ``"fp32"``, ``"bf16"`` or ``"auto"`` to the compute dtype on ``device``.

    ``"auto"`` picks bfloat16 on CUDA devices that run it natively (not emulated) and on CPUs with
    native bf16 instructions, float32 everywhere else. ``"bf16"`` on a CPU without them is honoured with a
    ``UserWarning``: there bf16 is emulated, and a pixel update ran 13x slower than in float32 on a
    2-core AMD EPYC with AVX2 only (``docs/benchmarks.md``, section B).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            warnings.warn(
                "precision='bf16' on a CPU without native bfloat16 instructions (avx512_bf16 or "
                "amx_bf16): bf16 matmuls are emulated and training runs many times slower than in "
                "float32; use precision='auto' or 'fp32'",
                UserWarning,
                stacklevel=2,
            )
        return torch.bfloat16
    if device.type == "cuda":
        # without emulation: GPUs before Ampere "support" bfloat16 only by emulating it, slowly
        with torch.cuda.device(device) if device.index is not None else contextlib.nullcontext():
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.float32


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op for float32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def active_compute_dtype(device_type: str) -> torch.dtype:
    """The dtype matmuls run in at this point: the autocast dtype if autocast is on for
    ``device_type``, float32 otherwise."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.float32
