"""One file of a releases tree (an ISO, a tarball, a sidecar): stream, hash, verify, resume.

The package downloader's discipline for files that are not packages: the
body streams into an unnamed file in the store (bounded memory, hashed as it
arrives, throttled by the shared rate limit), transient failures are retried
and resumed with ``Range`` + ``If-Range``, and only bytes that match their
expectations (size, and the sidecar/yaml digests when there are any) get a
name under ``objects/``. A mismatch is fetched once more from scratch, then
refused with a ChecksumMismatchError.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.sidecars import Expected, FileDigest, FileDigester, check_file
from mirrord.core.clock import Clock
from mirrord.core.config import FetchConfig
from mirrord.core.errors import ChecksumMismatchError, TransientOriginError
from mirrord.fetch.bodies import BodyChunks, DownloadClient
from mirrord.fetch.download import FLUSH_AT, StreamSink, Throttle, Unthrottled
from mirrord.fetch.http1 import Chunk
from mirrord.fetch.retry import call_with_retries
from mirrord.storage.store import ContentStore


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A verified file in the store (not yet durable) and what the origin said of it."""

    digest: FileDigest
    last_modified: str | None


@dataclass
class FileDownloader:
    origin: DownloadClient
    store: ContentStore
    config: FetchConfig
    clock: Clock
    log: FilteringBoundLogger
    throttle: Throttle = field(default_factory=Unthrottled)
    rng: random.Random = field(default_factory=random.Random)  # jitter, not cryptography
    # Packages first: while this says so, a file's body is not read further (see _stream).
    yield_to: Callable[[], Awaitable[None]] | None = None
    received: int = 0  # bytes off the wire, for progress and tests

    async def download(self, relpath: str, expected: Expected, max_bytes: int) -> StoredFile:
        """Store exactly the bytes ``expected`` describes under their sha256 (not yet durable)."""
        limit = expected.size if expected.size is not None else max_bytes
        for attempt in (1, 2):
            sink = StreamSink(self.store, relpath, FileDigester)
            try:
                last_modified = await call_with_retries(
                    lambda: self._transfer(relpath, sink, limit),  # noqa: B023 - awaited here
                    self.config,
                    self.clock,
                    self.rng,
                    lambda attempt, error, wait: self.log.debug(
                        "releases.file.retry", path=relpath, attempt=attempt, error=str(error)
                    ),
                )
                digest = await asyncio.to_thread(sink.complete, [])
                check_file(relpath, expected, digest)
            except ChecksumMismatchError as error:
                await asyncio.to_thread(sink.discard)
                self.log.warning(
                    "releases.file.verify_failed",
                    path=relpath,
                    what=error.what,
                    expected=error.expected,
                    actual=error.actual,
                    attempt=attempt,
                )
                if attempt == 2:
                    raise
                continue
            except BaseException:
                await asyncio.to_thread(sink.discard)
                raise
            sink.place(digest.sha256)
            return StoredFile(digest, last_modified)
        raise AssertionError("unreachable")

    async def _transfer(self, relpath: str, sink: StreamSink[FileDigest], limit: int) -> str | None:
        resume = sink.written if sink.validator else 0
        url = self.origin.path_url(relpath)
        try:
            async with self.origin.open_body(
                url, offset=resume, if_range=sink.validator, now=self.clock.time()
            ) as (start, body):
                if start.offset == 0 and sink.written:
                    await asyncio.to_thread(sink.restart)
                if start.length is not None and start.offset + start.length > limit:
                    raise ChecksumMismatchError(
                        relpath,
                        "size",
                        str(limit),
                        f"{start.offset + start.length} (Content-Length)",
                    )
                sink.validator = start.validator
                await self._stream(relpath, sink, body, limit)
                return start.last_modified
        except TransientOriginError as error:
            if error.status == 416:
                sink.validator = None
            raise

    async def _stream(
        self, relpath: str, sink: StreamSink[FileDigest], body: BodyChunks, limit: int
    ) -> None:
        chunks: list[Chunk] = []
        buffered = 0
        try:
            async for chunk in body.chunks():
                await self._yield()
                self.received += len(chunk)
                await self.throttle.consume(len(chunk))
                chunks.append(chunk)
                buffered += len(chunk)
                if sink.written + buffered > limit:
                    raise ChecksumMismatchError(relpath, "size", str(limit), "more bytes than that")
                if buffered >= FLUSH_AT:
                    await asyncio.to_thread(sink.write, chunks)
                    chunks, buffered = [], 0
        finally:
            if chunks:  # keep what arrived, so a retry can resume after it
                await asyncio.to_thread(sink.write, chunks)

    async def _yield(self) -> None:
        """Wait while packages are being fetched, but read on before the socket times out."""
        if self.yield_to is None:
            return
        try:
            # The bound is the socket's own read timeout (loop time, as aiohttp's is).
            async with asyncio.timeout(self.config.read_timeout / 2):
                await self.yield_to()
        except TimeoutError:
            return
