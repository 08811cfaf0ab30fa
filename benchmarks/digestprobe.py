"""CPU seconds the package digester spends on a data set, page cache warm.

``python -m benchmarks.digestprobe <directory of .apk files> [rounds]``: every
package fed through ``PackageDigester`` in 1 MiB blocks, best of ``rounds``
by process CPU time (so other load on the machine matters little). Run it
with ``PYTHONPATH`` at another checkout to compare its digester.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mirrord
from mirrord.alpine.apkpackage import PackageDigester

BLOCK = 1 << 20


def digest_all(files: list[Path]) -> int:
    total = 0
    for path in files:
        digester = PackageDigester(path.name)
        with path.open("rb") as handle:
            while block := handle.read(BLOCK):
                digester.feed(block)
        total += digester.finish().size
    return total


def main(argv: list[str]) -> None:
    files = sorted(Path(argv[0]).rglob("*.apk"))
    rounds = int(argv[1]) if len(argv) > 1 else 3
    for path in files:  # into the page cache
        path.read_bytes()
    best = float("inf")
    total = 0
    for _ in range(rounds):
        start = time.process_time()
        total = digest_all(files)
        best = min(best, time.process_time() - start)
    print(
        f"{Path(mirrord.__file__).parent}: {len(files)} packages, {total / 1e9:.2f} GB, "
        f"best CPU {best:.2f} s, {total / best / 1e9:.2f} GB/s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
