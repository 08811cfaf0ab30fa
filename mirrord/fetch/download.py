"""One package download: stream, hash as bytes arrive, verify, retry, resume.

``PackageDownloader.download`` streams a package into an unnamed file in the
store while computing its digests, checks it against the signed index (size,
``C:``, ``datahash``) and only then gives it its name under ``objects/``
(durability and recording are the committer's). Transient
failures are retried with backoff and resumed with ``Range`` + ``If-Range``
when the origin allows; a package that fails verification is fetched once
more from scratch, then fails. The same code runs on the daemon's event loop
and inside fetch worker processes.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from mirrord.alpine.apkpackage import PackageDigest, PackageDigester, check_package
from mirrord.core.clock import Clock
from mirrord.core.config import FetchConfig
from mirrord.core.errors import (
    InternalError,
    MirrordError,
    PackageVerifyError,
    StoreError,
    TransientOriginError,
)
from mirrord.core.eventlog import EventLog
from mirrord.core.model import ArchKey, PackageRef
from mirrord.fetch.bodies import BodyChunks, DownloadClient
from mirrord.fetch.events import FetchEvents
from mirrord.fetch.http1 import Chunk
from mirrord.fetch.retry import call_with_retries, retry_reason
from mirrord.storage.durable import start_writeback
from mirrord.storage.store import ContentStore, StoredObject, TempObject

IOV_MAX = 1024
WRITEBACK_EVERY = 8 << 20
FLUSH_AT = 1 << 20  # hand bytes to the hashing/writing thread in batches this big
# A body that arrived whole, up to this size, is hashed and written on the event
# loop: a thread would cost a hop and, while it hashes, a GIL hand-off with the
# loop for every chunk (a fetch worker's pool threads made ~30 futex calls a file).
INLINE_MAX = FLUSH_AT


class Throttle(Protocol):
    async def consume(self, nbytes: int) -> None: ...


class Unthrottled:
    async def consume(self, nbytes: int) -> None:
        return None


@contextmanager
def crash_boundary(ref: PackageRef, log: EventLog) -> Iterator[None]:
    """A bug while fetching ``ref`` costs this package (an InternalError), not the process."""
    try:
        yield
    except MirrordError:
        raise
    except Exception as error:
        log.exception("fetch.package.crashed", package=ref.filename)
        raise InternalError(f"{ref.filename}: {error!r}") from None


def verify_reason(error: PackageVerifyError) -> str:
    what = error.what.split(" ", 1)[0]
    return {"checksum": "checksum", "datahash": "datahash", "size": "size"}.get(what, "format")


D = TypeVar("D", covariant=True)


class Digester(Protocol[D]):
    def feed(self, chunk: bytes | bytearray | memoryview) -> None: ...
    def finish(self) -> D: ...


class StreamSink(Generic[D]):
    """An object under construction plus the running digests of its bytes. Blocking."""

    def __init__(
        self, store: ContentStore, filename: str, new_digester: Callable[[], Digester[D]]
    ) -> None:
        self.filename = filename
        self.written = 0
        self.validator: str | None = None  # If-Range value for a resume
        self._store = store
        self._new_digester = new_digester
        self._digester = new_digester()
        self._temp: TempObject | None = None
        self._flushed = 0

    def _file(self) -> TempObject:
        if self._temp is None:
            try:
                self._temp = self._store.create_temp()
            except OSError as error:
                raise StoreError(
                    str(self._store.objects), f"cannot create a temp file: {error.strerror}"
                ) from None
        return self._temp

    def restart(self) -> None:
        if self._temp is not None:
            os.ftruncate(self._temp.fd, 0)
            os.lseek(self._temp.fd, 0, os.SEEK_SET)
        self._digester = self._new_digester()
        self.written = 0
        self._flushed = 0

    def write(self, chunks: list[Chunk]) -> None:
        """Hash and write the chunks as they came off the socket (no joining copies)."""
        fd = self._file().fd
        total = 0
        for chunk in chunks:
            self._digester.feed(chunk)
            total += len(chunk)
        try:
            _writev_all(fd, chunks)
        except OSError as error:
            raise StoreError(self.filename, f"cannot write a temp file: {error.strerror}") from None
        self.written += total
        if self.written - self._flushed >= WRITEBACK_EVERY:
            # Start writing this stretch to disk now, without waiting: the group
            # commit's syncfs then finds little left to do.
            start_writeback(fd, self._flushed, self.written - self._flushed)
            self._flushed = self.written

    def complete(self, tail: list[Chunk]) -> D:
        if tail:
            self.write(tail)
        self._file()
        return self._digester.finish()

    def place(self, sha256: str) -> None:
        """Name the verified object under ``objects/`` and close it."""
        temp = self._file()
        try:
            self._store.place_temp(temp, sha256)
        except OSError as error:
            self.discard()
            raise StoreError(self.filename, f"cannot store: {error.strerror}") from None
        os.close(temp.fd)
        self._temp = None

    def discard(self) -> None:
        if self._temp is not None:
            os.close(self._temp.fd)
            self._store.discard_temp(self._temp)
            self._temp = None


class PackageSink(StreamSink[PackageDigest]):
    """A package under construction: its digests are what the signed index promises."""

    def __init__(self, store: ContentStore, filename: str) -> None:
        super().__init__(store, filename, lambda: PackageDigester(filename))


def _writev_all(fd: int, chunks: list[Chunk]) -> None:
    pending: list[Chunk] = list(chunks)
    while pending:
        written = os.writev(fd, pending[:IOV_MAX])
        while written and pending:
            first = pending[0]
            if written >= len(first):
                written -= len(first)
                pending.pop(0)
            else:
                pending[0] = memoryview(first)[written:]
                written = 0


@dataclass
class _Received:
    bytes: int = 0


class PackageDownloader:
    def __init__(
        self,
        origin: DownloadClient,
        store: ContentStore,
        config: FetchConfig,
        *,
        clock: Clock,
        log: EventLog,
        events: FetchEvents,
        throttle: Throttle | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._origin = origin
        self._store = store
        self._config = config
        self._clock = clock
        self._log = log
        self._events = events
        self.throttle: Throttle = throttle or Unthrottled()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def keep_idle_connections(self, keep: bool) -> None:
        """Off while other processes download: this one's idle connections close."""
        self._origin.keep_idle_connections(keep)

    def idle_buffer_bytes(self) -> int:
        """Read buffers its idle connections hold."""
        return self._origin.idle_buffer_bytes()

    async def download(self, key: ArchKey, ref: PackageRef) -> StoredObject:
        """Store exactly what ``ref`` promises under its digest (not yet durable)."""
        for attempt in (1, 2):
            sink = PackageSink(self._store, ref.filename)
            try:
                digest = await self._transfer_with_retries(key, ref, sink)
                check_package(ref, digest)
            except PackageVerifyError as error:
                await asyncio.to_thread(sink.discard)
                self._events.verify_failed(verify_reason(error))
                self._log.warning(
                    "fetch.package.verify_failed",
                    arch=str(key),
                    package=ref.filename,
                    what=error.what,
                    expected=error.expected,
                    actual=error.actual,
                    attempt=attempt,
                )
                if attempt == 2:
                    raise
                self._events.retried(key, "verification")
                continue
            except BaseException:
                await asyncio.to_thread(sink.discard)
                raise
            sink.place(digest.key)  # verified: it may have a name now (one syscall)
            return StoredObject(digest.key, digest.size)
        raise AssertionError("unreachable")

    async def _transfer_with_retries(
        self, key: ArchKey, ref: PackageRef, sink: PackageSink
    ) -> PackageDigest:
        def note_retry(attempt: int, error: BaseException, wait: float) -> None:
            self._events.retried(key, retry_reason(error))
            self._log.debug(  # during an outage, one per package per attempt: summed per arch
                "fetch.package.retry",
                arch=str(key),
                package=ref.filename,
                attempt=attempt,
                error=str(error),
                wait=round(wait, 3),
            )

        return await call_with_retries(
            lambda: self._transfer(key, ref, sink), self._config, self._clock, self._rng, note_retry
        )

    async def _transfer(self, key: ArchKey, ref: PackageRef, sink: PackageSink) -> PackageDigest:
        resume = sink.written if sink.validator else 0
        counter = _Received()
        try:
            async with self._origin.download(
                key,
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
                tail = await self._stream_body(ref, sink, body, counter)
        except TransientOriginError as error:
            if error.status == 416:
                sink.validator = None
            raise
        finally:
            self._events.received(key, counter.bytes)
        if sink.written == 0 and sum(map(len, tail)) <= INLINE_MAX:
            return sink.complete(tail)
        return await asyncio.to_thread(sink.complete, tail)

    async def _stream_body(
        self, ref: PackageRef, sink: PackageSink, body: BodyChunks, counter: _Received
    ) -> list[Chunk]:
        """Throttle, size-check and batch the body into the sink; returns the unwritten tail."""
        chunks: list[Chunk] = []
        buffered = 0
        try:
            async for chunk in body.chunks():  # as received: no joining copies
                counter.bytes += len(chunk)
                await self.throttle.consume(len(chunk))
                chunks.append(chunk)
                buffered += len(chunk)
                if sink.written + buffered > ref.size:
                    raise PackageVerifyError(
                        ref.filename, "size (S:)", str(ref.size), "more bytes than that"
                    )
                if buffered >= FLUSH_AT:
                    await asyncio.to_thread(sink.write, chunks)
                    chunks, buffered = [], 0
        except BaseException:
            if chunks:  # keep what arrived, so a retry can resume after it
                await asyncio.to_thread(sink.write, chunks)
            raise
        return chunks
