"""glibc heap settings that keep a long-running process's RSS near what it uses.

- The mmap threshold. Planning an arch inflates and parses its index: buffers
  of megabytes, allocated and freed at once. After such a free glibc raises its
  mmap threshold (up to 32 MiB), so later big buffers come from the heap, where
  freed holes stay resident. Pinning the threshold at 1 MiB keeps every buffer
  that large in its own mapping, returned to the kernel on free. It stays above
  the 256 KiB chunks a download receives: pinned at 128 KiB (glibc's starting
  value), each chunk became an mmap and full syncs ran 10-25 % slower
  (benchmarks/HISTORY.md).
- The number of arenas. glibc gives each thread that allocates while another
  holds the lock an arena of its own, up to 8 per core; every executor thread
  (hashing, fsync, SQLite) then keeps its own partly used 64 MiB heap. Two
  arenas are enough for threads that mostly wait on the kernel.
- Trimming. Freed memory at the top of an arena goes back on its own, freed
  pages in the middle only through ``malloc_trim``: called at calm points (an
  arch published), it returns what planning and downloading left behind.

Allocators without these calls (musl's ``mallopt`` is a no-op) are left alone.
Process-wide settings: only process entry points call ``tune_heap``.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20
ARENA_MAX = 2


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _mallopt(option: int, value: int) -> bool:
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(option, value))


def pin_mmap_threshold() -> bool:
    """True when the allocator took the fixed threshold."""
    return _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def cap_arenas() -> bool:
    """True when the allocator took the cap. Before the process starts threads."""
    return _mallopt(M_ARENA_MAX, ARENA_MAX)


def release_free_memory() -> bool:
    """Give the kernel back the free pages of every arena (True if any went back)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))
