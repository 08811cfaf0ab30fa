"""Keep big freed buffers out of the C heap, so a long run's RSS does not ratchet up.

Planning an arch inflates and parses its index: buffers of megabytes,
allocated and freed at once. After such a free glibc raises its mmap threshold
(up to 32 MiB), so later big buffers come from the heap, where freed holes stay
resident. Pinning the threshold at 1 MiB keeps every buffer that large in its
own mapping, returned to the kernel on free. It stays above the 256 KiB
chunks a download receives: pinned at 128 KiB (glibc's starting value), each
chunk became an mmap and full syncs ran 10-25 % slower (benchmarks/HISTORY.md).
Allocators without ``mallopt`` (musl has a no-op) are left alone.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD = 1 << 20


def pin_mmap_threshold() -> bool:
    """True when the allocator took the fixed threshold."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
