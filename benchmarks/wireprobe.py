"""Microseconds to encode and decode one fetch worker message of each per-file kind.

``python -m benchmarks.wireprobe``: a Job, a Done and a Received each through
``wire.encode`` and ``wire.decode``, best of 5 rounds of 100,000 by timeit.
Run it with ``PYTHONPATH`` at another checkout (from a directory with no
``mirrord/``) to compare its wire format.
"""

from __future__ import annotations

import functools
import timeit
from collections.abc import Callable
from pathlib import Path

import mirrord
from mirrord.core.model import ArchKey, PackageRef
from mirrord.fetch.events import JobEvents
from mirrord.fetch.wire import Done, Job, Message, Received, decode, encode
from mirrord.storage.store import StoredObject

NUMBER = 100_000
REF = PackageRef("busybox-1.36.1-r29.apk", "Q1abcdefghijklmnopqrstuvwxyz0=", 512_345)
MESSAGES: list[Message] = [
    Job(7123, ArchKey("v3.20", "main", "x86_64"), REF),
    Done(7123, StoredObject("apk:" + "ab" * 32, REF.size), JobEvents(REF.size), received=12_000),
    Received(65_536),
]


def best_us(call: Callable[[], object]) -> float:
    return min(timeit.repeat(call, number=NUMBER, repeat=5)) / NUMBER * 1e6


def main() -> None:
    print(Path(mirrord.__file__).parent)
    for message in MESSAGES:
        line = encode(message)
        assert decode(line) == message
        encoding = best_us(functools.partial(encode, message))
        decoding = best_us(functools.partial(decode, line))
        print(
            f"  {message.TAG:5} encode {encoding:5.2f} us, decode {decoding:5.2f} us, "
            f"together {encoding + decoding:5.2f} us, {len(line)} bytes"
        )


if __name__ == "__main__":
    main()
