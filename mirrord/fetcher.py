"""Package downloads: N workers draining a fair queue, verifying as bytes arrive.

Each job streams one package into a temp file while hashing it (in a worker
thread, in large batches), checks it against the signed index (size, ``C:``,
``datahash``), and hands it to the committer. Transient failures are retried
with backoff and resumed with ``Range`` when the origin allows it; a package
that fails verification is fetched once more from scratch, then fails.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from structlog.typing import FilteringBoundLogger
from tenacity import RetryCallState

from mirrord.apkpackage import PackageDigest, PackageDigester, check_package
from mirrord.clock import Clock
from mirrord.committer import Committer
from mirrord.config import FetchConfig
from mirrord.errors import (
    MirrordError,
    PackageVerifyError,
    ShuttingDownError,
    StoreError,
    TransientOriginError,
)
from mirrord.fairqueue import FairQueue, QueueClosed
from mirrord.metrics import Metrics
from mirrord.model import ArchKey, PackageRef
from mirrord.origin import OriginClient
from mirrord.retry import retry_reason, retrying
from mirrord.store import ContentStore, Landing

READ_CHUNK = 1 << 18
FLUSH_AT = 1 << 20  # hand bytes to the hashing/writing thread in batches this big


class Throttle(Protocol):
    async def consume(self, nbytes: int) -> None: ...


class Unthrottled:
    async def consume(self, nbytes: int) -> None:
        return None


class PackageSink:
    """A temp file plus the running digests of what was written to it. Blocking."""

    def __init__(self, path: Path, filename: str) -> None:
        self.path = path
        self.filename = filename
        self.written = 0
        self.validator: str | None = None  # If-Range value for a resume
        self._digester = PackageDigester(filename)
        self._fd = -1

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as error:
            raise StoreError(str(self.path), f"cannot create temp file: {error.strerror}") from None

    def restart(self) -> None:
        self.close()
        self._digester = PackageDigester(self.filename)
        self.written = 0
        self._open()

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        self._digester.feed(data)
        view = memoryview(data)
        try:
            while view.nbytes:
                count = os.write(self._fd, view)
                view = view[count:]
        except OSError as error:
            raise StoreError(str(self.path), f"cannot write: {error.strerror}") from None
        self.written += len(data)

    def finish(self) -> PackageDigest:
        if self._fd < 0:
            self._open()
        self.close()
        return self._digester.finish()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass
class FetchJob:
    key: ArchKey  # the arch whose URL we fetch from (the first that asked)
    ref: PackageRef
    done: asyncio.Future[str]
    waiters: set[ArchKey] = field(default_factory=set)


class Fetcher:
    def __init__(
        self,
        origin: OriginClient,
        store: ContentStore,
        committer: Committer,
        config: FetchConfig,
        *,
        clock: Clock,
        log: FilteringBoundLogger,
        metrics: Metrics,
        throttle: Throttle | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._origin = origin
        self._store = store
        self._committer = committer
        self._config = config
        self._clock = clock
        self._log = log
        self._metrics = metrics
        self.throttle: Throttle = throttle or Unthrottled()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._queue: FairQueue[FetchJob] = FairQueue()
        self._jobs: dict[tuple[str, int], FetchJob] = {}
        self.in_flight = 0

    # --- the public face ----------------------------------------------------------

    def fetch(self, key: ArchKey, ref: PackageRef) -> asyncio.Future[str]:
        """A future for the stored object's SHA-256; one download per identity."""
        job = self._jobs.get(ref.identity)
        if job is None:
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            done.add_done_callback(_consume_exception)
            job = FetchJob(key, ref, done)
            self._jobs[ref.identity] = job
            self._queue.put(key, job)
            self._metrics.queue_depth.set(len(self._queue))
        job.waiters.add(key)
        return job.done

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stop_taking_work(self) -> int:
        """Fail every job not yet started and let the workers finish; returns how many."""
        dropped = 0
        while (job := self._queue.get_nowait()) is not None:
            self._finish(job, error=ShuttingDownError())
            dropped += 1
        self._queue.close()
        self._metrics.queue_depth.set(0)
        return dropped

    async def run(self) -> None:
        """The worker pool; returns after ``stop_taking_work`` once in-flight jobs end."""
        async with asyncio.TaskGroup() as group:
            for number in range(self._config.concurrency):
                group.create_task(self._worker(), name=f"fetch-worker-{number}")

    # --- workers --------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            try:
                job = await self._queue.get()
            except QueueClosed:
                return
            self._metrics.queue_depth.set(len(self._queue))
            self.in_flight += 1
            self._metrics.in_flight.inc()
            try:
                sha256 = await self._fetch_verified(job)
            except MirrordError as error:
                self._finish(job, error=error)
            else:
                self._finish(job, sha256=sha256)
            finally:
                self.in_flight -= 1
                self._metrics.in_flight.dec()

    def _finish(
        self, job: FetchJob, *, sha256: str | None = None, error: MirrordError | None = None
    ) -> None:
        self._jobs.pop(job.ref.identity, None)
        labels = self._metrics.labels(job.key)
        if job.done.done():
            return
        if error is not None:
            self._metrics.fetched_files.labels(**labels, outcome="failed").inc()
            job.done.set_exception(error)
        else:
            assert sha256 is not None
            self._metrics.fetched_files.labels(**labels, outcome="stored").inc()
            job.done.set_result(sha256)

    async def _fetch_verified(self, job: FetchJob) -> str:
        log = self._log.bind(arch=str(job.key), package=job.ref.filename)
        for attempt in (1, 2):
            sink = PackageSink(self._store.temp_path(job.ref.filename), job.ref.filename)
            try:
                digest = await self._transfer_with_retries(job, sink)
                check_package(job.ref, digest)
            except PackageVerifyError as error:
                await asyncio.to_thread(sink.discard)
                self._metrics.verification_failures.labels(reason=_reason(error)).inc()
                log.warning(
                    "fetch.package.verify_failed",
                    what=error.what,
                    expected=error.expected,
                    actual=error.actual,
                    attempt=attempt,
                )
                if attempt == 2:
                    raise
                self._metrics.retries.labels(reason="verification").inc()
                continue
            except BaseException:
                await asyncio.to_thread(sink.discard)
                raise
            sha256 = await self._committer.land(
                Landing(sink.path, digest.sha256, digest.size), job.ref.checksum
            )
            log.debug("fetch.package.done", bytes=digest.size, sha256=sha256)
            return sha256
        raise AssertionError("unreachable")

    async def _transfer_with_retries(self, job: FetchJob, sink: PackageSink) -> PackageDigest:
        policy = retrying(
            self._config, self._clock, self._rng, lambda state: self._note_retry(job, state)
        )
        result: PackageDigest = await policy(self._transfer, job, sink)
        return result

    def _note_retry(self, job: FetchJob, state: RetryCallState) -> None:
        reason, error = retry_reason(state)
        self._metrics.retries.labels(reason=reason).inc()
        self._log.info(
            "fetch.package.retry",
            arch=str(job.key),
            package=job.ref.filename,
            attempt=state.attempt_number,
            error=str(error),
            wait=round(state.upcoming_sleep, 3),
        )

    async def _transfer(self, job: FetchJob, sink: PackageSink) -> PackageDigest:
        ref = job.ref
        resume = sink.written if sink.validator else 0
        labels = self._metrics.labels(job.key)
        received = 0
        try:
            async with self._origin.download(
                job.key,
                ref.filename,
                offset=resume,
                if_range=sink.validator,
                now=self._clock.time(),
            ) as (start, body):
                if start.offset == 0 and sink.written:
                    await asyncio.to_thread(sink.restart)
                if start.length is not None and start.offset + start.length != ref.size:
                    raise PackageVerifyError(
                        ref.filename,
                        "size (S:)",
                        str(ref.size),
                        f"{start.offset + start.length} (Content-Length)",
                    )
                sink.validator = start.validator
                buffer = bytearray()
                try:
                    async for chunk in body.iter_chunked(READ_CHUNK):
                        received += len(chunk)
                        await self.throttle.consume(len(chunk))
                        buffer += chunk
                        if sink.written + len(buffer) > ref.size:
                            raise PackageVerifyError(
                                ref.filename, "size (S:)", str(ref.size), "more bytes than that"
                            )
                        if len(buffer) >= FLUSH_AT:
                            await asyncio.to_thread(sink.write, bytes(buffer))
                            buffer.clear()
                finally:
                    if buffer:  # keep what arrived, so a retry can resume after it
                        await asyncio.to_thread(sink.write, bytes(buffer))
        except TransientOriginError as error:
            if error.status == 416:
                sink.validator = None
            raise
        finally:
            self._metrics.fetched_bytes.labels(**labels, outcome="received").inc(received)
        return await asyncio.to_thread(sink.finish)


def _reason(error: PackageVerifyError) -> str:
    what = error.what.split(" ", 1)[0]
    return {"checksum": "checksum", "datahash": "datahash", "size": "size"}.get(what, "format")


def _consume_exception(future: asyncio.Future[str]) -> None:
    # Nobody may be left waiting (an arch that gave up); do not warn about it.
    if not future.cancelled():
        future.exception()
