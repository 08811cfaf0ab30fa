"""HTTP(S) access to the origin: conditional index polls and streamed package bodies.

One ``aiohttp.ClientSession`` per origin with explicit timeouts and
connection limits. aiohttp's exceptions are mapped into mirrord's error tree
here, where they enter: transient (retry) or permanent (fail the package).
"""

from __future__ import annotations

import email.utils
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from aiohappyeyeballs import AddrInfoType
from yarl import URL

from mirrord import __version__
from mirrord.core.config import FetchConfig
from mirrord.core.errors import OriginError, PermanentOriginError, TransientOriginError
from mirrord.core.model import ArchKey

USER_AGENT = f"mirrord/{__version__}"
INDEX_NAME = "APKINDEX.tar.gz"
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


MIN_RECEIVE_BUFFER = 16 * 1024
MAX_RECEIVE_BUFFER = 4 * 1024 * 1024


def limited_receive_buffer(rate: float | None, burst: int, connections: int) -> int | None:
    """SO_RCVBUF per connection so that all of them buffer at most half the burst.

    The kernel doubles what SO_RCVBUF asks for (its bookkeeping), and a
    rate-limited reader keeps its buffer full, so each connection may hold
    twice its share ahead of the token bucket.
    """
    if rate is None:
        return None
    share = burst // (4 * max(1, connections))
    return max(MIN_RECEIVE_BUFFER, min(MAX_RECEIVE_BUFFER, share))


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²": float() refuses what isdigit allows
        return float(value)
    when = parse_http_date(value)
    return None if when is None else max(0.0, when - now)


@dataclass(frozen=True, slots=True)
class IndexResult:
    url: str
    body: bytes | None  # None: not modified since the validators we sent
    etag: str | None
    last_modified: str | None

    @property
    def last_modified_ts(self) -> float | None:
        return parse_http_date(self.last_modified)


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


@contextmanager
def map_errors(url: str) -> Iterator[None]:
    """Translate aiohttp and socket failures into OriginError subclasses."""
    try:
        yield
    except OriginError:
        raise
    except aiohttp.ConnectionTimeoutError:
        raise TransientOriginError(url, "timed out connecting (fetch.connect_timeout)") from None
    except TimeoutError:
        raise TransientOriginError(url, "timed out: no data within fetch.read_timeout") from None
    except aiohttp.ClientPayloadError as error:
        raise TransientOriginError(url, f"body cut short: {error}") from None
    except aiohttp.ServerDisconnectedError:
        raise TransientOriginError(url, "server disconnected") from None
    except aiohttp.ClientConnectorError as error:
        raise TransientOriginError(url, f"cannot connect: {error.os_error}") from None
    except aiohttp.InvalidURL as error:
        raise PermanentOriginError(url, f"invalid URL: {error}") from None
    except aiohttp.ClientResponseError as error:
        raise TransientOriginError(url, f"bad response: {error.message}", error.status) from None
    except aiohttp.ClientError as error:
        raise TransientOriginError(url, f"{type(error).__name__}: {error}") from None
    except OSError as error:
        raise TransientOriginError(url, f"network error: {error.strerror or error}") from None


def status_error(url: str, response: aiohttp.ClientResponse, now: float) -> OriginError:
    status = response.status
    reason = f"HTTP {status} {response.reason or ''}".strip()
    if status in _TRANSIENT_STATUS or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
        return TransientOriginError(url, reason, status, retry_after)
    return PermanentOriginError(url, reason, status)


INDEX_CONNECTIONS = 4  # index polls have connections of their own, beside the downloads


class OriginClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        index_session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base = URL(base_url.rstrip("/"))
        self._session = session
        # Polls never queue behind downloads for a connection: a huge arch's
        # slow downloads must not delay another arch's poll.
        self._index_session = index_session or session
        self._prefixes: dict[ArchKey, str] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        base_url: str,
        fetch: FetchConfig,
        receive_buffer: Callable[[], int | None] = lambda: None,
    ) -> AsyncIterator[OriginClient]:
        """``receive_buffer`` says, per new connection, an SO_RCVBUF to pin (None: the
        kernel's autotuning). Under a rate limit a small one keeps the kernel from
        buffering more than the token bucket allows ahead of the limit."""

        def make_socket(addr_info: AddrInfoType) -> socket.socket:
            family, kind, proto, _, _ = addr_info
            sock = socket.socket(family=family, type=kind, proto=proto)
            size = receive_buffer()
            if size is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            return sock

        # sock_connect, not connect: aiohttp's "connect" also counts the wait for a
        # free connection in the pool, which under load is queueing, not a failure.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=fetch.connect_timeout,
            sock_read=fetch.read_timeout,
        )

        def session(limit: int, per_host: int) -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=limit,
                limit_per_host=per_host,
                ttl_dns_cache=300,
                enable_cleanup_closed=True,
                socket_factory=make_socket,
            )
            return aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )

        async with (
            session(fetch.concurrency, fetch.per_host) as downloads,
            session(INDEX_CONNECTIONS, INDEX_CONNECTIONS) as indexes,
        ):
            yield cls(base_url, downloads, indexes)

    def url(self, key: ArchKey, name: str) -> URL:
        # Branch, repo, arch and package names are validated to a URL-safe
        # alphabet (apart from '+', which quote() escapes): build the string
        # directly instead of paying yarl's per-segment parsing for every request.
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = str(self.base.joinpath(key.branch, key.repo, key.arch)) + "/"
            self._prefixes[key] = prefix
        return URL(prefix + quote(name, safe="@~-._"), encoded=True)

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

    def path_url(self, relpath: str) -> URL:
        """The URL of a path under the origin's base; each segment is quoted."""
        quoted = "/".join(quote(part, safe="@~-._+") for part in relpath.split("/"))
        return URL(f"{self.base}/{quoted}", encoded=True)

    async def fetch_small(
        self,
        url: URL,
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
        with map_errors(str(url)):
            session = self._index_session
            async with session.get(url, headers=headers, allow_redirects=True) as response:
                if response.status == 304:
                    return IndexResult(str(url), None, etag, last_modified)
                if response.status != 200:
                    raise status_error(str(url), response, now)
                if response.content_length is not None and response.content_length > max_bytes:
                    raise PermanentOriginError(
                        str(url),
                        f"{what} is {response.content_length} bytes, over the limit {max_bytes}",
                    )
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > max_bytes:
                        raise PermanentOriginError(
                            str(url), f"{what} is over the limit {max_bytes} bytes"
                        )
                if response.content_length is not None and len(body) != response.content_length:
                    raise TransientOriginError(str(url), f"{what} body shorter than Content-Length")
                return IndexResult(
                    str(url),
                    bytes(body),
                    response.headers.get("ETag"),
                    response.headers.get("Last-Modified"),
                )

    def download(
        self,
        key: ArchKey,
        filename: str,
        *,
        offset: int = 0,
        if_range: str | None = None,
        now: float,
    ) -> AbstractAsyncContextManager[tuple[DownloadStart, aiohttp.StreamReader]]:
        """Open a package body, resuming at ``offset`` when the origin allows it.

        The yielded DownloadStart says where the body really starts: 0 when
        the origin ignored the Range request (or the validator changed).
        """
        # open_body's own context manager, not one more wrapped around it (one per file)
        return self.open_body(self.url(key, filename), offset=offset, if_range=if_range, now=now)

    @asynccontextmanager
    async def open_body(
        self, url: URL, *, offset: int = 0, if_range: str | None = None, now: float
    ) -> AsyncIterator[tuple[DownloadStart, aiohttp.StreamReader]]:
        """Open any body on the download connections (see ``download``)."""
        headers: dict[str, str] = {}
        if offset > 0 and if_range:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = if_range
        with map_errors(str(url)):
            async with self._session.get(url, headers=headers, allow_redirects=True) as response:
                start = 0
                if response.status == 206 and "Range" in headers:
                    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                    if not match or int(match.group(1)) != offset:
                        raise TransientOriginError(
                            str(url), f"bad Content-Range {response.headers.get('Content-Range')!r}"
                        )
                    start = offset
                elif response.status == 416:
                    raise TransientOriginError(
                        str(url), "range not satisfiable; starting over", 416
                    )
                elif response.status != 200:
                    raise status_error(str(url), response, now)
                info = DownloadStart(
                    str(url),
                    start,
                    response.content_length,
                    response.headers.get("ETag"),
                    response.headers.get("Last-Modified"),
                )
                yield info, response.content
