"""Group commit of verified downloads into the store.

Downloads hand their verified temp files here. One task lands everything
that has queued up since its last round: record the intent in the state
database, rename the files into ``objects/``, one ``syncfs`` for the whole
batch, then mark them durable. Only then does anyone learn the object exists.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from mirrord.clock import Clock
from mirrord.crashpoints import CrashPoints
from mirrord.errors import MirrordError, StoreError
from mirrord.statedb import StateDB
from mirrord.store import ContentStore, Landing


@dataclass
class _Request:
    landing: Landing
    checksum: str | None
    done: asyncio.Future[str]


class Committer:
    def __init__(
        self,
        store: ContentStore,
        db: StateDB,
        clock: Clock,
        log: FilteringBoundLogger,
        crash: CrashPoints | None = None,
    ) -> None:
        self._store = store
        self._db = db
        self._clock = clock
        self._log = log
        self._crash = crash or CrashPoints()
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self.batches = 0

    async def land(self, landing: Landing, checksum: str | None) -> str:
        """Return the object's digest once it is durable and recorded."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(landing, checksum, done))
        return await done

    async def land_bytes(self, data: bytes) -> str:
        temp = self._store.temp_path("blob")
        sha256 = await asyncio.to_thread(_write_temp, temp, data)
        return await self.land(Landing(temp, sha256, len(data)), None)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            closing = False
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    closing = True
                    break
                batch.append(item)
            await self._commit(batch)
            if closing:
                return

    async def _commit(self, batch: list[_Request]) -> None:
        try:
            rows = [(r.landing.sha256, r.landing.size, r.checksum) for r in batch]
            await self._db.call(self._db.begin_landing, rows, self._clock.time())
            self._crash.reach("store.after_intent")
            await asyncio.to_thread(self._land_all, batch)
            self._crash.reach("store.after_rename")
            await asyncio.to_thread(self._store.sync)
            self._crash.reach("store.after_sync")
            await self._db.call(self._db.mark_durable, [r.landing.sha256 for r in batch])
        except OSError as error:
            failure: MirrordError = StoreError(
                str(self._store.root), f"cannot land objects: {error.strerror or error}"
            )
            self._log.error("store.commit.failed", error=str(failure), objects=len(batch))
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(failure)
            return
        self.batches += 1
        for request in batch:
            if not request.done.done():
                request.done.set_result(request.landing.sha256)

    def _land_all(self, batch: list[_Request]) -> None:
        for request in batch:
            self._store.land(request.landing)


def _write_temp(path: Path, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()
