"""HTTP(S) access to the origin: conditional index polls, listings, sidecars.

Polls go over keep-alive connections of their own (``mirrord.fetch.pool``,
``INDEX_CONNECTIONS`` of them), so they never queue behind downloads; package
bodies go over ``mirrord.fetch.bodies``, opened beside them. The client's
failures are mapped into mirrord's error tree where they enter (``map_failure``):
transient (retry) or permanent. A sync never imports aiohttp for its origin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mirrord.core.config import FetchConfig
from mirrord.core.errors import PermanentOriginError, TransientOriginError
from mirrord.core.eventlog import EventLog
from mirrord.core.model import ArchKey
from mirrord.fetch.bodies import DownloadClient
from mirrord.fetch.httpstatus import USER_AGENT, parse_http_date, status_error
from mirrord.fetch.pool import ConnectionPool, map_failure
from mirrord.fetch.tcppath import PathSample

INDEX_NAME = "APKINDEX.tar.gz"


@dataclass(frozen=True, slots=True)
class IndexResult:
    url: str
    body: bytes | None  # None: not modified since the validators we sent
    etag: str | None
    last_modified: str | None

    @property
    def last_modified_ts(self) -> float | None:
        return parse_http_date(self.last_modified)


INDEX_CONNECTIONS = 4  # index polls have connections of their own, beside the downloads


class OriginClient:
    def __init__(self, base_url: str, polls: ConnectionPool, downloads: DownloadClient) -> None:
        self.base = base_url.rstrip("/")
        # Polls never queue behind downloads for a connection: a huge arch's
        # slow downloads must not delay another arch's poll.
        self._polls = polls
        self.downloads = downloads

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        base_url: str,
        fetch: FetchConfig,
        receive_buffer: Callable[[], int | None] = lambda: None,
        log: EventLog | None = None,
        on_path: Callable[[PathSample], None] | None = None,
    ) -> AsyncIterator[OriginClient]:
        """Poll connections of their own; ``downloads`` as ``DownloadClient.open`` makes them.
        ``on_path`` hears from both."""
        polls = ConnectionPool(
            limit=INDEX_CONNECTIONS,
            per_host=INDEX_CONNECTIONS,
            connect_timeout=fetch.connect_timeout,
            read_timeout=fetch.read_timeout,
            user_agent=USER_AGENT,
            idle_buffers=False,  # an index a pass: 256 KiB each would idle in between
            on_path=on_path,
        )
        try:
            async with DownloadClient.open(
                base_url, fetch, receive_buffer, log, on_path
            ) as downloads:
                yield cls(base_url, polls, downloads)
        finally:
            polls.close()

    def idle_buffer_bytes(self) -> int:
        """Read buffers the idle poll and download connections hold."""
        return self._polls.idle_buffer_bytes() + self.downloads.idle_buffer_bytes()

    def url(self, key: ArchKey, name: str) -> str:
        return self.downloads.url(key, name)

    def path_url(self, relpath: str) -> str:
        """The URL of a path under the origin's base; each segment is quoted."""
        return self.downloads.path_url(relpath)

    async def fetch_index(
        self,
        key: ArchKey,
        *,
        etag: str | None,
        last_modified: str | None,
        max_bytes: int,
        now: float,
    ) -> IndexResult:
        return await self.fetch_small(
            self.url(key, INDEX_NAME),
            etag=etag,
            last_modified=last_modified,
            max_bytes=max_bytes,
            now=now,
            what="index",
        )

    async def fetch_small(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        max_bytes: int,
        now: float,
        what: str = "body",
    ) -> IndexResult:
        """GET a small body whole (an index, a listing, a sidecar) on the poll connections."""
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            async with self._polls.get(url, headers) as response:
                if response.status == 304:
                    return IndexResult(url, None, etag, last_modified)
                if response.status != 200:
                    raise status_error(url, response.status, response.reason, response.headers, now)
                length = response.content_length
                if length is not None and length > max_bytes:
                    raise PermanentOriginError(
                        url, f"{what} is {length} bytes, over the limit {max_bytes}"
                    )
                body = bytearray()
                async for chunk in response.body.chunks():
                    body += chunk
                    if len(body) > max_bytes:
                        raise PermanentOriginError(
                            url, f"{what} is over the limit {max_bytes} bytes"
                        )
                if length is not None and len(body) != length:
                    raise TransientOriginError(url, f"{what} body shorter than Content-Length")
                return IndexResult(
                    url,
                    bytes(body),
                    response.headers.get("etag"),
                    response.headers.get("last-modified"),
                )
        except Exception as error:
            mapped = map_failure(url, error)
            if mapped is None or mapped is error:
                raise
            raise mapped from None
