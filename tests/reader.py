"""A client that reads the published tree the way apk does, over and over.

"Read the index, then open every file it lists and check size and C:" in a
loop, from another thread, while mirrord publishes. Any missing or wrong file
is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from mirrord.alpine.apkindex import read_index_archive
from mirrord.alpine.apkpackage import check_package, digest_bytes
from mirrord.alpine.signing import Keyring
from mirrord.core.config import Config
from mirrord.core.errors import MirrordError
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import PackageSpec
from mirrord.sync.runtime import Runtime, open_runtime
from tests.helpers import Mirror

Fetch = Callable[[str], bytes | None]  # relative path -> bytes, None when missing


@dataclass
class ReaderStats:
    rounds: int = 0
    files_checked: int = 0
    indexes_seen: set[str] = field(default_factory=set)
    rounds_done: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for_round(self, index_sha256: str, timeout: float) -> bool:
        """Block until one whole round has been read against this index."""
        with self.changed:
            return self.changed.wait_for(lambda: index_sha256 in self.rounds_done, timeout)


def read_until(
    stop: threading.Event, fetch: Fetch, arch_path: str, keyring: Keyring, stats: ReaderStats
) -> ReaderStats:
    while not stop.is_set():
        index = fetch(f"{arch_path}/APKINDEX.tar.gz")
        if index is None:
            continue  # nothing published yet
        digest = hashlib.sha256(index).hexdigest()
        stats.indexes_seen.add(digest)
        try:
            archive = read_index_archive(
                index,
                keyring,
                allow_untrusted=False,
                max_index_bytes=64 << 20,
                max_package_bytes=1 << 30,
            )
        except MirrordError as error:
            stats.problems.append(f"index: {error}")
            continue
        for entry in archive.entries:
            data = fetch(f"{arch_path}/{entry.filename}")
            if data is None:
                stats.problems.append(f"missing {entry.filename}")
                continue
            try:
                check_package(entry.ref(), digest_bytes(entry.filename, data))
            except MirrordError as error:
                stats.problems.append(str(error))
            stats.files_checked += 1
        with stats.changed:
            stats.rounds += 1
            stats.rounds_done[digest] = stats.rounds_done.get(digest, 0) + 1
            stats.changed.notify_all()
    return stats


def evolve(specs: list[PackageSpec], step: int) -> list[PackageSpec]:
    """Rebuild two packages, drop one, add one: names and bytes change every time."""
    rebuilt = [
        s.bumped() if i in (step % len(specs), (step * 7) % len(specs)) else s
        for i, s in enumerate(specs)
    ]
    del rebuilt[(step * 3) % len(rebuilt)]
    added = PackageSpec(
        f"added{step:03d}", "1.0-r0", arch=specs[0].arch, payload=1500 + step, seed=5000 + step
    )
    rebuilt.append(added)
    return rebuilt


async def publish_while_reading(
    mirror: Mirror,
    config: Config,
    key: ArchKey,
    specs: list[PackageSpec],
    fetch: Fetch,
    publishes: int,
    follower: Callable[[Runtime], Coroutine[Any, Any, None]] | None = None,
) -> ReaderStats:
    """Publish ``publishes`` changed indexes while a reader loops over the tree.

    After each publish, wait until the reader has read one whole round against
    the new index, so every snapshot is exercised and the test is deterministic.
    ``follower`` runs beside the publishes (a service that serves what ``fetch`` reads).
    """
    stop = threading.Event()
    stats = ReaderStats()
    keyring = Keyring.load(mirror.keys)
    index = config.publish.path.joinpath(*key.parts, "APKINDEX.tar.gz")
    async with (
        open_runtime(config, log=mirror.logs.logger()) as runtime,
        asyncio.TaskGroup() as group,
    ):
        group.create_task(asyncio.to_thread(read_until, stop, fetch, str(key), keyring, stats))
        following = group.create_task(follower(runtime)) if follower is not None else None
        try:
            for step in range(publishes):
                if step:
                    specs = evolve(specs, step)
                    mirror.tree.put(key, specs)
                (result,) = await runtime.engine.run_pass()
                assert result.outcome == "published", result.error
                digest = hashlib.sha256(index.read_bytes()).hexdigest()
                assert await asyncio.to_thread(stats.wait_for_round, digest, 60)
        finally:
            stop.set()
            if following is not None:
                following.cancel()
    return stats
