"""Ask the C allocator to give freed memory back to the kernel.

Parsing an index allocates and frees tens of megabytes at once. After such a
free, glibc raises its mmap threshold (up to 32 MiB), so later large buffers
come from the heap, where freed holes stay resident for the rest of the run.
A fixed threshold keeps buffers over 128 KiB in their own mappings, returned
on free. Measured on a 100,000-package sync: peak RSS of the main process
~190 MiB with glibc's default, ~163 MiB with this (benchmarks/HISTORY.md).
Allocators without ``mallopt`` (musl has a no-op stub) are left alone.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed


def return_freed_memory() -> bool:
    """Fix the allocator's mmap threshold; True when the allocator took it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
