"""glibc malloc settings under which XLA:CPU reuses its large per-step buffers instead of faulting fresh pages in.

XLA:CPU's convolutions (Eigen's spatial convolution) allocate large temporaries with ``malloc`` on every call: for
the paper's ResNet at batch 128, 37.8 MB each (128 x 32 x 32 x 72 floats, the 3x3 patches of 8 channels). Such
blocks lie above glibc's largest mmap threshold (32 MB on 64-bit), and in the per-thread arenas of XLA's thread pool
freed memory is handed back to the kernel, so by default each one is an ``mmap`` and a ``munmap``: every step then
faults in and zeroes its pages afresh (about 47,000 minor faults per ResNet step, a fifth of the process's CPU time
spent in the kernel, on the 2-core EPYC of ``docs/results/speed.md``). ``reuse_freed_memory`` asks glibc
(``mallopt``) for one arena, no mmap and no trimming, so a freed block is reused by the next step's ``malloc``.

It changes where buffers live, not what is computed: ``benchmarks/bench_malloc.py`` checks the loss after its steps is
bit-identical and measures the step time, the faults and the peak memory (the process keeps its peak heap). Call it
before JAX starts its CPU backend (``driver.train_and_evaluate`` does): arenas made before stay. Off glibc (macOS,
musl) it does nothing; ``JST_HOST_MALLOC=glibc`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# -1 as the trim threshold is glibc's size_t maximum (mallopt takes an int; glibc stores it as a size_t): never trim.
# A finite one would not do: a jitted step with an evaluation inside a ``lax.cond`` (``train_loop``'s python loop)
# allocates a ~2 GB temporary buffer for both branches on every call, and freeing it shrank the heap each step.
SETTINGS: tuple[tuple[int, int], ...] = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
OPT_OUT_VARIABLE = 'JST_HOST_MALLOC'  # 'glibc': leave glibc's defaults


def reuse_freed_memory() -> bool:
    """Sets ``SETTINGS`` with glibc's ``mallopt``; returns whether glibc took all of them (False off glibc, or when
    ``$JST_HOST_MALLOC`` is ``glibc``)."""
    if os.environ.get(OPT_OUT_VARIABLE, '') == 'glibc':
        return False
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    mallopt = getattr(libc, 'mallopt', None)
    if mallopt is None or getattr(libc, 'gnu_get_libc_version', None) is None:
        return False
    return all(mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in SETTINGS)
