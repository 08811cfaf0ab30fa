"""Group commit: make stored objects durable, then record them.

Downloads give verified files their name in ``objects/`` themselves
(content-addressed and verified, an object appearing there early is harmless)
and queue them here. One task takes everything queued since its last round, makes it
durable with one ``syncfs`` and records it in the state database in one
statement. Only then does anyone learn the object exists, and only then can an
index that lists it be published. An object renamed but not yet recorded
when the process dies is found and re-verified by start-up recovery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import MirrordError, ShuttingDownError, StoreError
from mirrord.core.model import ArchKey
from mirrord.storage.cleanstop import Settlement
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore, StoredObject


@dataclass
class _Request:
    stored: StoredObject
    checksum: str | None
    done: asyncio.Future[str]
    key: ArchKey | None  # the arch whose download this is (None: not a download)


class Committer:
    def __init__(
        self,
        store: ContentStore,
        db: StateDB,
        clock: Clock,
        log: FilteringBoundLogger,
        crash: CrashPoints | None = None,
        max_pending: int = 4096,
        window: float = 1.0,
        batch_max: int = 5000,
        settlement: Settlement | None = None,
    ) -> None:
        self._store = store
        self.settlement = settlement or Settlement()
        self._db = db
        self._clock = clock
        self._log = log
        self._crash = crash or CrashPoints()
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_pending)
        self._window = window
        self._batch_max = batch_max
        self._downloading: Callable[[ArchKey], int] = lambda _key: 0
        self._closed = False

    async def submit(
        self, stored: StoredObject, checksum: str | None, key: ArchKey | None = None
    ) -> asyncio.Future[str]:
        """Queue a placed object; the future gives the digest once durable and recorded.

        Waits only while ``max_pending`` objects are already queued (backpressure
        on downloads when the disk cannot keep up).
        """
        if self._closed:  # the committer has stopped: nothing would ever record it
            self.settlement.spoil("an object placed after the committer stopped")
            raise ShuttingDownError()
        with self.settlement.at_risk("queueing a placed object"):
            await self._slots.acquire()
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda _: self._slots.release())
        self._queue.put_nowait(_Request(stored, checksum, done, key))
        return done

    async def commit(self, stored: StoredObject, checksum: str | None) -> str:
        """Return the object's digest once it is durable and recorded."""
        return await (await self.submit(stored, checksum))

    async def commit_bytes(self, data: bytes) -> str:
        """Store in-memory content (an index); its digest once durable and recorded."""
        with self.settlement.at_risk("storing an index"):  # the thread may still place it
            sha256 = await asyncio.to_thread(self._store.put_bytes, data)
        return await self.commit(StoredObject(sha256, len(data)), None)

    def wait_for_more_while(self, downloading: Callable[[ArchKey], int]) -> None:
        """How many downloads an arch still has running: while every arch in a batch
        has some, the batch may wait for more; an arch with none wants its commit now."""
        self._downloading = downloading

    def close(self) -> None:
        self._closed = True
        self._queue.put_nowait(None)

    async def run(self) -> None:
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                batch, closing = await self._gather([first])
                await self._commit_batch(batch)
                if closing:
                    return
        finally:
            self._fail_the_rest()

    def _fail_the_rest(self) -> None:
        """Whoever still waits for a commit that will not come hears so now."""
        self._closed = True
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if request is not None and not request.done.done():
                self.settlement.spoil("placed objects left unrecorded")
                request.done.set_exception(ShuttingDownError())

    async def _gather(self, batch: list[_Request]) -> tuple[list[_Request], bool]:
        """Take what is queued; while downloads are running, wait up to ``window`` for more.

        One syncfs costs milliseconds whatever the batch size, and while it runs
        the journal holds up every file creation: under load, about one batch a
        second is what keeps durability cheap. But an arch whose downloads are
        all done is waiting for this commit to publish: then it goes at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        # The batch's arches, kept as it grows: checking every request each time the
        # queue runs dry made a batch of thousands quadratic.
        keys = {request.key for request in batch}
        while len(batch) < self._batch_max:
            if not self._queue.empty():
                item = self._queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0 or not self._more_coming(keys):
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item is None:
                return batch, True
            batch.append(item)
            keys.add(item.key)
        return batch, False

    def _more_coming(self, keys: set[ArchKey | None]) -> bool:
        return all(key is not None and self._downloading(key) > 0 for key in keys)

    async def _commit_batch(self, batch: list[_Request]) -> None:
        try:
            self._crash.reach("store.before_sync")
            await asyncio.to_thread(self._store.sync)
            self._crash.reach("store.after_sync")
            rows = [(r.stored.sha256, r.stored.size, r.checksum) for r in batch]
            await self._db.call(self._db.record_objects, rows, self._clock.time())
        except (OSError, StoreError) as error:  # ENOSPC, EIO, or SQLite's disk is full
            reason = error.strerror if isinstance(error, OSError) else error.reason
            failure: MirrordError = StoreError(
                str(self._store.root), f"cannot commit objects: {reason or error}"
            )
            self._log.error("store.commit.failed", error=str(failure), objects=len(batch))
            self.settlement.spoil("a group commit failed")
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(failure)
            return
        for request in batch:
            if not request.done.done():
                request.done.set_result(request.stored.sha256)
