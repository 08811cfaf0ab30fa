"""Package and file bodies from the origin, over ``mirrord.fetch.http1``.

The download path only: a GET with ``Range`` + ``If-Range`` when resuming,
its status checked, its body streamed as the socket delivered it. Polls and
listings (``mirrord.fetch.origin``) use the same client on connections of their
own.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from mirrord.core.config import FetchConfig
from mirrord.core.errors import TransientOriginError
from mirrord.core.eventlog import EventLog
from mirrord.core.model import ArchKey
from mirrord.fetch.http1 import Chunk
from mirrord.fetch.httpstatus import USER_AGENT, status_error
from mirrord.fetch.pool import ConnectionPool, map_failure
from mirrord.fetch.tcppath import PathSample

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class BodyChunks(Protocol):
    """A body as it arrives: ``async for chunk in body.chunks()``."""

    def chunks(self) -> AsyncIterator[Chunk]: ...


@dataclass(frozen=True, slots=True)
class DownloadStart:
    url: str
    offset: int  # where this body starts within the file (0 unless resumed)
    length: int | None  # Content-Length of this body
    etag: str | None
    last_modified: str | None

    @property
    def validator(self) -> str | None:
        """What If-Range may carry: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


class DownloadClient:
    """Bodies under the origin's base URL, on keep-alive connections of their own."""

    def __init__(self, base_url: str, pool: ConnectionPool) -> None:
        self.base = base_url.rstrip("/")
        self._pool = pool
        self._prefixes: dict[ArchKey, str] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        base_url: str,
        fetch: FetchConfig,
        receive_buffer: Callable[[], int | None] = lambda: None,
        log: EventLog | None = None,
        on_path: Callable[[PathSample], None] | None = None,
    ) -> AsyncIterator[DownloadClient]:
        """``receive_buffer`` says, per new connection, an SO_RCVBUF to pin (None: the
        kernel's autotuning). Under a rate limit a small one keeps the kernel from
        buffering more than the token bucket allows ahead of the limit. ``log`` and
        ``on_path``: see ``ConnectionPool``."""
        pool = ConnectionPool(
            limit=fetch.connections,
            per_host=fetch.per_host,
            pipeline=fetch.pipeline,
            connect_timeout=fetch.connect_timeout,
            read_timeout=fetch.read_timeout,
            user_agent=USER_AGENT,
            receive_buffer=receive_buffer,
            log=log,
            on_path=on_path,
        )
        try:
            yield cls(base_url, pool)
        finally:
            pool.close()

    def keep_idle_connections(self, keep: bool) -> None:
        """Keep-alive on (the default) or off: see ``ConnectionPool.keep_idle``."""
        self._pool.keep_idle(keep)

    def idle_buffer_bytes(self) -> int:
        return self._pool.idle_buffer_bytes()

    def pipelined_requests(self) -> int:
        """Requests answered that went out behind others on their connection."""
        return self._pool.pipelined

    def url(self, key: ArchKey, name: str) -> str:
        # Branch, repo, arch and package names are validated to a URL-safe
        # alphabet (apart from '+', which quote() escapes).
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = f"{self.base}/{key.branch}/{key.repo}/{key.arch}/"
            self._prefixes[key] = prefix
        return prefix + quote(name, safe="@~-._")

    def path_url(self, relpath: str) -> str:
        """The URL of a path under the origin's base; each segment is quoted."""
        quoted = "/".join(quote(part, safe="@~-._+") for part in relpath.split("/"))
        return f"{self.base}/{quoted}"

    def download(
        self,
        key: ArchKey,
        filename: str,
        *,
        offset: int = 0,
        if_range: str | None = None,
        now: float,
    ) -> AbstractAsyncContextManager[tuple[DownloadStart, BodyChunks]]:
        """Open a package body, resuming at ``offset`` when the origin allows it.

        The yielded DownloadStart says where the body really starts: 0 when
        the origin ignored the Range request (or the validator changed).
        """
        return self.open_body(self.url(key, filename), offset=offset, if_range=if_range, now=now)

    @asynccontextmanager
    async def open_body(
        self, url: str, *, offset: int = 0, if_range: str | None = None, now: float
    ) -> AsyncIterator[tuple[DownloadStart, BodyChunks]]:
        """Open any body under the base (see ``download``)."""
        headers: dict[str, str] = {}
        if offset > 0 and if_range:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = if_range
        try:
            async with self._pool.get(url, headers) as response:
                start = 0
                if response.status == 206 and headers:
                    content_range = response.headers.get("content-range", "")
                    match = _CONTENT_RANGE.match(content_range)
                    if not match or int(match.group(1)) != offset:
                        raise TransientOriginError(url, f"bad Content-Range {content_range!r}")
                    start = offset
                elif response.status == 416:
                    raise TransientOriginError(url, "range not satisfiable; starting over", 416)
                elif response.status != 200:
                    raise status_error(url, response.status, response.reason, response.headers, now)
                info = DownloadStart(
                    url,
                    start,
                    response.content_length,
                    response.headers.get("etag"),
                    response.headers.get("last-modified"),
                )
                yield info, response.body
        except Exception as error:
            mapped = map_failure(url, error)
            if mapped is None or mapped is error:
                raise
            raise mapped from None
