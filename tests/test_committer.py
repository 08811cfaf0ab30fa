"""The group commit: a batch waits for more only while every arch in it still has downloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mirrord.core.clock import FakeClock
from mirrord.core.logs import make_logger
from mirrord.core.model import ArchKey
from mirrord.storage.committer import Committer
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore, StoredObject

BUSY = ArchKey("v3.20", "main", "x86_64")
DONE = ArchKey("v3.20", "community", "x86_64")
WINDOW = 3600.0  # a batch that waited for the window would outlast the test's bound
BOUND = 30.0


async def _committed(tmp_path: Path, submissions: list[ArchKey | None]) -> set[str]:
    """Submit one object per entry (the arch it was downloaded for), wait for every commit."""
    store = ContentStore(tmp_path / "storage")
    store.prepare()
    db = StateDB.open(tmp_path / "storage" / "state.db")
    committer = Committer(store, db, FakeClock(), make_logger("error", "json"), window=WINDOW)
    downloading = {BUSY: 5, DONE: 0}
    committer.wait_for_more_while(lambda key: downloading[key])
    digests = [f"{number:064x}" for number in range(1, len(submissions) + 1)]
    async with asyncio.TaskGroup() as group:
        group.create_task(committer.run())
        futures = [
            await committer.submit(StoredObject(sha256, size), None, key)
            for size, (sha256, key) in enumerate(zip(digests, submissions, strict=True))
        ]
        async with asyncio.timeout(BOUND):
            assert await asyncio.gather(*futures) == digests
        committer.close()
    try:
        return db.object_digests("00")
    finally:
        db.close()


async def test_an_arch_with_no_download_left_sends_the_batch_at_once(tmp_path: Path) -> None:
    recorded = await _committed(tmp_path, [BUSY, BUSY, DONE])
    assert recorded == {f"{n:064x}" for n in (1, 2, 3)}


async def test_a_request_that_is_no_download_sends_the_batch_at_once(tmp_path: Path) -> None:
    recorded = await _committed(tmp_path, [BUSY, None])
    assert recorded == {f"{n:064x}" for n in (1, 2)}
