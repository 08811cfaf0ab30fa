"""Big freed buffers go back to the kernel, so a long run's RSS does not ratchet up.

Runs in child interpreters: the allocator setting is process-wide.
"""

from __future__ import annotations

import subprocess
import sys

RSS_MIB = """
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    raise SystemExit("no VmRSS")
"""

# Free one 8 MiB buffer (glibc then raises its mmap threshold to 8 MiB), fill
# the heap with 2 MiB buffers, free all but the newest (it pins the heap top),
# and print how many MiB stayed resident.
PROGRAM = (
    RSS_MIB
    + """
import sys
from mirrord.core.heap import pin_mmap_threshold
if sys.argv[1] == "pinned":
    assert pin_mmap_threshold()
bytearray(8 << 20)  # allocated, then freed at once
before = rss()
buffers = [bytearray(2 << 20) for _ in range(60)]
last = buffers.pop()
del buffers
print(rss() - before)
"""
)


def resident_growth(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_big_freed_buffers_go_back_to_the_kernel() -> None:
    assert resident_growth("default") >= 100  # glibc kept the freed 118 MiB resident
    assert resident_growth("pinned") <= 10  # only the buffer still alive


# Fill the heap with 64 KiB buffers (under the mmap threshold), free all but the
# newest (it pins the heap top, so nothing goes back by itself), then trim.
TRIM_PROGRAM = (
    RSS_MIB
    + """
from mirrord.core.heap import cap_arenas, release_free_memory
assert cap_arenas()
buffers = [bytearray(64 << 10) for _ in range(1600)]
last = buffers.pop()
del buffers
kept = rss()
assert release_free_memory()
print(kept - rss())
"""
)


def test_trimming_returns_freed_heap_pages_the_top_chunk_pins() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TRIM_PROGRAM], capture_output=True, text=True, check=True
    )
    assert int(done.stdout) >= 80  # of the ~100 MiB freed below the live buffer
