"""Package downloads: N workers draining a fair queue, one download per identity.

The Fetcher decides what runs when: jobs are deduplicated by index identity
(``C:``, ``S:``) across arches and branches, handed out round-robin between
arches (so a huge arch cannot starve small ones), and bounded by
``fetch.concurrency``. Each job runs on a Downloader (on this event loop, or
in a fetch worker process) and its verified object goes to the committer;
the worker moves on while the object is committed with the next group commit.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from mirrord.core.errors import (
    MirrordError,
    QueueClosed,
    ShuttingDownError,
    StoreError,
)
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey, PackageRef
from mirrord.fetch.download import crash_boundary
from mirrord.fetch.fairqueue import FairQueue
from mirrord.storage.committer import Committer
from mirrord.storage.store import StoredObject

RECENT = 8192  # finished identities remembered (enough to cover a planning race)


class Downloader(Protocol):
    async def download(self, key: ArchKey, ref: PackageRef) -> StoredObject: ...


@dataclass(slots=True)
class FetchJob:
    key: ArchKey  # the arch whose URL we fetch from (the first that asked)
    ref: PackageRef
    done: asyncio.Future[str]


class Fetcher:
    def __init__(
        self,
        downloader: Downloader,
        committer: Committer,
        *,
        concurrency: int,
        log: FilteringBoundLogger,
        metrics: Metrics,
    ) -> None:
        self.downloader = downloader
        self._committer = committer
        self._concurrency = concurrency
        self._log = log
        self._metrics = metrics
        self._queue: FairQueue[FetchJob] = FairQueue()
        self._jobs: dict[tuple[str, int], FetchJob] = {}
        self._recent: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._downloading: Counter[ArchKey] = Counter()
        self._running = asyncio.Event()
        self._running.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.in_flight = 0
        self.completed = 0  # jobs ended, either way (the watchdog's sign of progress)
        self._idle = asyncio.Event()  # no package job queued, downloading or committing
        self._idle.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        """Start no new download; the ones in flight finish."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def fetch(self, key: ArchKey, ref: PackageRef) -> asyncio.Future[str]:
        """A future for the stored object's key; one download per identity.

        An identity is either in flight here, recently finished (remembered for
        arches that planned before it was committed), or recorded in the state database.
        """
        recent = self._recent.get(ref.identity)
        if recent is not None or self._queue.closed:
            answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            if recent is not None:
                answer.set_result(recent)
            else:
                answer.set_exception(ShuttingDownError())
                answer.add_done_callback(_consume_exception)
            return answer
        job = self._jobs.get(ref.identity)
        if job is None:
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            done.add_done_callback(_consume_exception)
            job = FetchJob(key, ref, done)
            self._jobs[ref.identity] = job
            self._idle.clear()
            self._downloading[key] += 1
            self._queue.put(key, job)
            self._metrics.queue_depth.set(len(self._queue))
        return job.done

    async def wait_idle(self) -> None:
        """Until no package is queued, downloading or committing (releases files wait so)."""
        await self._idle.wait()

    def downloading(self, key: ArchKey) -> int:
        """Jobs first asked for by this arch that are queued or downloading."""
        return self._downloading[key]

    def forget_recent(self) -> None:
        self._recent.clear()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stop_taking_work(self) -> int:
        """Fail every job not yet started and let the workers finish; returns how many."""
        dropped = 0
        while (job := self._queue.get_nowait()) is not None:
            self._downloading[job.key] -= 1
            self._finish(job, error=ShuttingDownError())
            dropped += 1
        self._queue.close()
        self._metrics.queue_depth.set(0)
        return dropped

    async def run(self) -> None:
        """The worker pool; returns after ``stop_taking_work`` once in-flight jobs end."""
        async with asyncio.TaskGroup() as group:
            self._tasks = [
                group.create_task(self._worker(), name=f"fetch-worker-{number}")
                for number in range(self._concurrency)
            ]

    def abort(self) -> None:
        """Cancel the downloads in flight (after the shutdown grace period)."""
        self.stop_taking_work()
        for task in self._tasks:
            task.cancel()

    async def _worker(self) -> None:
        while True:
            await self._running.wait()
            try:
                job = await self._queue.get()
            except QueueClosed:
                return
            self._metrics.queue_depth.set(len(self._queue))
            self.in_flight += 1
            self._metrics.in_flight.inc()
            try:
                with crash_boundary(job.ref, self._log):
                    stored = await self.downloader.download(job.key, job.ref)
            except MirrordError as error:
                self._finish(job, error=error)
                continue
            finally:
                self.in_flight -= 1
                self._metrics.in_flight.dec()
                self._downloading[job.key] -= 1
            # Durability is the committer's business: this worker moves on to the
            # next download while the object is committed with the next group commit.
            committed = await self._committer.submit(stored, job.ref.checksum, job.key)
            committed.add_done_callback(functools.partial(self._committed, job))

    def _committed(self, job: FetchJob, committed: asyncio.Future[str]) -> None:
        if committed.cancelled():
            self._finish(job, error=ShuttingDownError())
            return
        error = committed.exception()
        if error is None:
            self._finish(job, sha256=committed.result())
        elif isinstance(error, MirrordError):
            self._finish(job, error=error)
        else:
            self._finish(job, error=StoreError(job.ref.filename, f"commit failed: {error}"))

    def _finish(
        self, job: FetchJob, *, sha256: str | None = None, error: MirrordError | None = None
    ) -> None:
        self._jobs.pop(job.ref.identity, None)
        if not self._jobs:
            self._idle.set()
        self.completed += 1
        if sha256 is not None:
            self._recent[job.ref.identity] = sha256
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        if job.done.done():
            return
        if error is not None:
            self._metrics.arch_outcome(self._metrics.fetched_files, job.key, "failed").inc()
            job.done.set_exception(error)
        else:
            assert sha256 is not None
            self._metrics.arch_outcome(self._metrics.fetched_files, job.key, "stored").inc()
            job.done.set_result(sha256)


def _consume_exception(future: asyncio.Future[str]) -> None:
    # Nobody may be left waiting (an arch that gave up); do not warn about it.
    if not future.cancelled():
        future.exception()
