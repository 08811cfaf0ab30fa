"""HTTP(S) access to the origin: conditional index polls, listings, sidecars.

One ``aiohttp.ClientSession`` per origin with explicit timeouts and
connection limits; package bodies go over ``mirrord.fetch.bodies``, opened
beside it. aiohttp's exceptions are mapped into mirrord's error tree here,
where they enter: transient (retry) or permanent (fail the package).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from yarl import URL

from mirrord.core.config import FetchConfig
from mirrord.core.errors import OriginError, PermanentOriginError, TransientOriginError
from mirrord.core.model import ArchKey
from mirrord.fetch.bodies import DownloadClient
from mirrord.fetch.httpstatus import USER_AGENT, parse_http_date, status_error

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


INDEX_CONNECTIONS = 4  # index polls have connections of their own, beside the downloads


class OriginClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, downloads: DownloadClient):
        self.base = URL(base_url.rstrip("/"))
        # Polls never queue behind downloads for a connection: a huge arch's
        # slow downloads must not delay another arch's poll.
        self._index_session = session
        self.downloads = downloads
        self._prefixes: dict[ArchKey, str] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        base_url: str,
        fetch: FetchConfig,
        receive_buffer: Callable[[], int | None] = lambda: None,
    ) -> AsyncIterator[OriginClient]:
        """Polls on aiohttp; ``downloads`` as ``DownloadClient.open`` makes them."""
        # sock_connect, not connect: aiohttp's "connect" also counts the wait for a
        # free connection in the pool, which under load is queueing, not a failure.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=fetch.connect_timeout,
            sock_read=fetch.read_timeout,
        )
        connector = aiohttp.TCPConnector(
            limit=INDEX_CONNECTIONS,
            limit_per_host=INDEX_CONNECTIONS,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            ) as indexes,
            DownloadClient.open(base_url, fetch, receive_buffer) as downloads,
        ):
            yield cls(base_url, indexes, downloads)

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
                    raise status_error(
                        str(url), response.status, response.reason, response.headers, now
                    )
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
