"""Bytes a publish plan holds per package, and its CPU per arch (issue 15's main process).

``python benchmarks/planprobe.py [packages]`` (default 25,000, one arch of the
memory scenario): synthetic index entries planned into empty storage, then
every package filled with a package key as its download lands. Prints the
traced bytes per package while all wait and once all are filled (index entries
gone, as in the engine), and CPU ms per arch for plan, ref + fill of each,
the link list and the snapshot record's encoding (best of 5, process time).
Then the index itself: the peak traced bytes and CPU of what the engine does
between an index's inflated text and its plan (parse, the store lookup's list
of identities, plan), the way the checkout it runs does it.
With ``PYTHONPATH`` at another checkout it measures that checkout's plan.
"""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator

import mirrord
from mirrord.alpine import apkindex
from mirrord.alpine.apkindex import IndexEntry
from mirrord.core.model import ArchKey
from mirrord.publish import plan as plan_module
from mirrord.publish.plan import PublishPlan, plan_publish
from mirrord.storage.statedb import encode_files

KEY = ArchKey("edge", "main", "x86_64")
LOOKUP_BATCH = 2000  # identities per store lookup, as the engine asks (when it batches)


def entries(count: int) -> list[IndexEntry]:
    return [
        IndexEntry(
            f"package-name-{i}",
            f"{i % 10}.{i % 31}.{i % 7}-r{i % 4}",
            checksum(i),
            1000 + i * 37 % 900_000,
        )
        for i in range(count)
    ]


def checksum(i: int) -> str:
    """An Alpine C: field, "Q1" and the base64 of a SHA-1, as real indexes have."""
    return "Q1" + base64.b64encode(hashlib.sha1(str(i).encode()).digest()).decode()


def package_key(i: int) -> str:
    return "apk:" + hashlib.sha256(str(i).encode()).hexdigest()


def downloads(plan: PublishPlan) -> Iterator[tuple[Callable[[], object], Callable[[str], None]]]:
    """(build the ref, fill the digest) of each waiting package, the way the engine does it."""
    if hasattr(plan, "fill_entry"):  # by entry number (the waiting map in columns)
        for entry in plan.waiting.snapshot():
            ref = functools.partial(plan.ref_entry, entry)
            yield ref, functools.partial(plan.fill_entry, entry)
    else:  # by identity (main df8b711 and before)
        for identity in list(plan.waiting):
            yield functools.partial(plan.ref, identity), functools.partial(plan.fill_one, identity)


def bytes_per_package(count: int) -> tuple[float, float]:
    tracemalloc.start()
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    listed = entries(count)
    plan = plan_publish(KEY, listed, {}, None, max_delete_fraction=0.1, force=False)
    del listed
    gc.collect()
    waiting = tracemalloc.get_traced_memory()[0] - start
    for i, (_ref, fill) in enumerate(downloads(plan)):
        fill(package_key(i))
    gc.collect()
    filled = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    return waiting / count, filled / count


def cpu_ms_per_arch(count: int, rounds: int = 5) -> float:
    listed = entries(count)
    keys = [package_key(i) for i in range(count)]
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        plan = plan_publish(KEY, listed, {}, None, max_delete_fraction=0.1, force=False)
        for (ref, fill), key in zip(downloads(plan), keys, strict=True):
            ref()
            fill(key)
        for _file in plan.to_link:
            pass
        encode_files(plan.files)
        best = min(best, time.process_time() - started)
    return best * 1000


def index_text(count: int) -> bytearray:
    lines = []
    for i, e in enumerate(entries(count)):
        lines.append(f"C:{checksum(i)}\nP:{e.name}\nV:{e.version}\nA:x86_64\nS:{e.size}\n")
        lines.append("T:a package of the memory scenario\nU:https://example.org/\nL:MIT\n\n")
    return bytearray("".join(lines).encode())


def index_to_plan(text: bytearray) -> tuple[PublishPlan, int]:
    """What the engine of this checkout does between the inflated index and its plan."""
    streaming = getattr(apkindex, "iter_entries", None)
    if streaming is None:  # the whole index as IndexEntry objects (main 64c2afe)
        listed = apkindex.parse_entries(text, 1 << 40)
        lookup = [(e.checksum, e.size) for e in listed]
        plan = plan_publish(KEY, listed, {}, None, max_delete_fraction=0.1, force=False)
    else:  # entries packed as they are parsed
        listing = plan_module.list_files(streaming(text, 1 << 40))
        lookup = next(listing.waiting.batches(LOOKUP_BATCH), [])
        plan = plan_module.plan_listing(KEY, listing, None, max_delete_fraction=0.1, force=False)
    return plan, len(lookup)


def index_peak_and_cpu(count: int, rounds: int = 3) -> tuple[float, float]:
    """Peak traced MiB above the text while an index becomes a plan; CPU ms, best of ``rounds``."""
    text = index_text(count)
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    index_to_plan(text)
    peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        index_to_plan(text)
        best = min(best, time.process_time() - started)
    return peak / 2**20, best * 1000


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 25_000
    waiting, filled = bytes_per_package(count)
    cpu = cpu_ms_per_arch(count)
    print(f"mirrord from {mirrord.__file__}, {count:,} packages")
    print(f"while all wait: {waiting:.0f} B/package; all filled: {filled:.0f} B/package")
    print(f"CPU per arch (plan, ref + fill each, link list, encode): {cpu:.0f} ms")
    peak, parse_cpu = index_peak_and_cpu(count)
    print(f"index text -> plan: peak {peak:.1f} MiB traced, CPU {parse_cpu:.0f} ms")


if __name__ == "__main__":
    main()
