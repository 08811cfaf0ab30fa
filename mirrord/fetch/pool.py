"""Keep-alive connections to the origin, bounded like aiohttp's (total, per host).

A GET follows redirects, retries once on a fresh connection when a pooled one
turns out closed by the server, and failures enter mirrord's error tree here
(``map_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from mirrord.core.errors import OriginError, PermanentOriginError, TransientOriginError
from mirrord.core.eventlog import EventLog
from mirrord.fetch.http1 import (
    BadResponse,
    Body,
    Connection,
    Exchange,
    StaleConnection,
    TransientBody,
)
from mirrord.fetch.httpstatus import limited_segment
from mirrord.fetch.tcppath import PathSample, sample_path

MAX_REDIRECTS = 10
MAX_ORIGIN_KEYS = 64  # origins (scheme://host:port) remembered parsed; redirects add some
# What urlsplit would treat specially past the authority (a query, a fragment, the
# characters it removes): such a URL is parsed in full every time.
_NEEDS_PARSING = re.compile(r"[?#\t\r\n]")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A request is not pipelined behind a body with more than this still to come: it
# would wait for that body instead of taking the next connection that frees up.
PIPELINE_BEHIND_MAX = 4 * 1024 * 1024
# Pipelined requests a host dropped (the connection closed before their answer),
# beyond those it answered, after which it gets one request per connection at a time.
PIPELINE_GIVE_UP = 16


@dataclass(frozen=True, slots=True)
class Response:
    url: str  # after redirects
    status: int
    reason: str
    headers: dict[str, str]
    body: Body

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return None if value is None else int(value)


_Key = tuple[str, str, int]  # scheme, host, port


class ConnectionPool:
    """Keep-alive connections, at most ``limit`` in all and ``per_host`` to one host.

    With ``pipeline`` above 1, a request that finds every connection it may have
    busy goes out on one of them behind up to ``pipeline - 1`` others (HTTP/1.1
    pipelining): the server starts on it as the body before it ends, instead of
    one round trip later.
    """

    def __init__(
        self,
        *,
        limit: int,
        per_host: int,
        connect_timeout: float,
        read_timeout: float,
        user_agent: str,
        receive_buffer: Callable[[], int | None] = lambda: None,
        idle_buffers: bool = True,
        pipeline: int = 1,
        log: EventLog | None = None,
        on_path: Callable[[PathSample], None] | None = None,
    ) -> None:
        """``idle_buffers`` False: a connection going idle drops a large read buffer, for
        connections that carry a few big bodies a pass (indexes), not a stream of them.
        ``log``: where a host that drops pipelined requests is reported. ``on_path``:
        given each new connection's round trip and window, after its first response."""
        self._limit = limit
        self._per_host = per_host
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._user_agent = user_agent
        self._receive_buffer = receive_buffer
        self._idle: dict[_Key, list[Connection]] = {}
        self._busy: dict[_Key, list[Connection]] = {}  # with requests in flight
        self._pipeline = pipeline
        self._log = log
        self._pipeline_score: dict[_Key, int] = {}  # pipelined requests dropped - answered
        self.pipelined = 0  # requests answered that went out behind others on their connection
        self._open: dict[_Key, int] = {}  # per host: idle and busy
        self._total = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None
        self._keep_idle = True
        self._idle_buffers = idle_buffers
        self._keys: dict[str, _Key] = {}  # "scheme://authority" -> its parsed _Key
        self._on_path = on_path
        self._unsampled: dict[Connection, bool] = {}  # new connections -> receive buffer pinned

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def keep_idle(self, keep: bool) -> None:
        """Whether a finished connection waits for the next request (keep-alive).

        Off, the idle connections close now and each one closes as its response
        ends: a connection keeps a read buffer of up to 256 KiB while it waits.
        """
        if keep == self._keep_idle:  # asked on every download: a change is rare
            return
        self._keep_idle = keep
        if not keep:
            for key, connections in self._idle.items():
                while connections:
                    connections.pop().close()
                    self._forget(key)

    def idle_buffer_bytes(self) -> int:
        """Bytes of read buffers the idle connections hold."""
        return sum(c.buffer_size for connections in self._idle.values() for c in connections)

    @asynccontextmanager
    async def get(self, url: str, headers: dict[str, str]) -> AsyncIterator[Response]:
        """GET ``url`` following redirects; the body is read inside the block."""
        for _ in range(MAX_REDIRECTS + 1):
            key, target = self._split(url)
            exchange = await self._request(url, key, target, headers)
            head = exchange.head
            assert head is not None
            location = head.headers.get("location")
            if head.status in REDIRECTS and location:
                self._release(key, exchange)
                url = urljoin(url, location)
                continue
            try:
                yield Response(url, head.status, head.reason, head.headers, Body(exchange))
            finally:
                self._release(key, exchange)
            return
        raise TransientOriginError(url, f"more than {MAX_REDIRECTS} redirects")

    def _split(self, url: str) -> tuple[_Key, str]:
        """``_split(url)``, without parsing again an origin already seen (once per download)."""
        authority_end = url.find("/", url.find("://") + 3)
        if authority_end > 0 and not _NEEDS_PARSING.search(url) and url[-1] > " ":
            key = self._keys.get(url[:authority_end])
            if key is not None:
                return key, url[authority_end:]
        key, target = _split(url)
        if authority_end > 0 and len(self._keys) < MAX_ORIGIN_KEYS:
            self._keys[url[:authority_end]] = key
        return key, target

    async def _request(self, url: str, key: _Key, target: str, headers: dict[str, str]) -> Exchange:
        request = self._request_bytes(key, target, headers)
        for fresh in (False, True):
            connection = await self._acquire(url, key, fresh)
            exchange = connection.send(request)
            pipelined = connection.in_flight > 1
            try:
                await exchange.read_head()
            except StaleConnection:
                self._release(key, exchange)
                if pipelined:
                    self._dropped_pipelined(key)
                continue
            except BaseException:
                self._release(key, exchange)
                raise
            if pipelined:
                self._pipeline_score[key] = self._pipeline_score.get(key, 0) - 1
                self.pipelined += 1
            return exchange
        raise TransientOriginError(url, "server disconnected")  # a fresh one closed at once

    def _dropped_pipelined(self, key: _Key) -> None:
        score = self._pipeline_score[key] = self._pipeline_score.get(key, 0) + 1
        if score == PIPELINE_GIVE_UP and self._log is not None:
            scheme, host, port = key
            self._log.warning(
                "fetch.pipeline.given_up",
                origin=f"{scheme}://{host}:{port}",
                dropped_beyond_answered=score,
                note="the server closed connections with pipelined requests unanswered: "
                "one request per connection to it from now on (fetch.pipeline: 1 says so "
                "from the start)",
            )

    def _request_bytes(self, key: _Key, target: str, headers: dict[str, str]) -> bytes:
        scheme, host, port = key
        default = 443 if scheme == "https" else 80
        authority = host if port == default else f"{host}:{port}"
        if ":" in host:
            authority = f"[{host}]" if port == default else f"[{host}]:{port}"
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {authority}",
            f"User-Agent: {self._user_agent}",
            "Accept-Encoding: identity",
            *(f"{name}: {value}" for name, value in headers.items()),
            "",
            "",
        ]
        return "\r\n".join(lines).encode("latin-1")

    async def _acquire(self, url: str, key: _Key, fresh: bool) -> Connection:
        woken = False
        while True:
            idle = self._idle.get(key)
            while idle and not fresh:
                connection = idle.pop()
                if not (connection.idle and self._fits(connection)):
                    connection.close()
                    self._forget(key)
                    continue
                return self._busy_with(key, connection)
            if self._total >= self._limit:
                self._close_one_idle()
            if self._total < self._limit and self._open.get(key, 0) < self._per_host:
                self._open[key] = self._open.get(key, 0) + 1
                self._total += 1
                try:
                    return self._busy_with(key, await self._connect(url, key))
                except BaseException:
                    self._forget(key)
                    raise
            behind = None if fresh else self._pipelinable(key)
            if behind is not None:
                return behind
            waiter = asyncio.get_running_loop().create_future()
            if woken:  # woken for room another took first: still next in line
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            woken = True
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the turn on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _busy_with(self, key: _Key, connection: Connection) -> Connection:
        self._busy.setdefault(key, []).append(connection)
        return connection

    def _pipelinable(self, key: _Key) -> Connection | None:
        """The busy connection a request is best sent on behind the others, if any."""
        if self._pipeline < 2 or self._pipeline_score.get(key, 0) >= PIPELINE_GIVE_UP:
            return None
        best: Connection | None = None
        buffer = self._receive_buffer()  # none pinned to another budget gets more
        for connection in self._busy.get(key, ()):
            if (
                connection.in_flight < self._pipeline
                and connection.pipelinable
                and connection.receive_buffer == buffer
                and connection.backlog <= PIPELINE_BEHIND_MAX
                and (
                    best is None
                    or (connection.in_flight, connection.backlog) < (best.in_flight, best.backlog)
                )
            ):
                best = connection
        return best

    def _close_one_idle(self) -> None:
        for key, connections in self._idle.items():
            if connections:
                connections.pop(0).close()
                self._forget(key)
                return

    async def _connect(self, url: str, key: _Key) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                receive_buffer = self._receive_buffer()
                sock = await self._connect_socket(infos, receive_buffer)
                tls = self._tls_context() if scheme == "https" else None
                connection = Connection(self._read_timeout)
                connection.receive_buffer = receive_buffer
                await loop.create_connection(
                    lambda: connection,
                    sock=sock,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
                if self._on_path is not None:
                    self._unsampled[connection] = receive_buffer is not None
        except TimeoutError:
            raise TransientOriginError(
                url, "timed out connecting (fetch.connect_timeout)"
            ) from None
        except ssl.SSLError as error:
            raise TransientOriginError(url, f"TLS: {error.reason or error}") from None
        except OSError as error:
            raise TransientOriginError(url, f"cannot connect: {error.strerror or error}") from None
        return connection

    async def _connect_socket(
        self, infos: Sequence[tuple[Any, ...]], receive_buffer: int | None
    ) -> socket.socket:
        loop = asyncio.get_running_loop()
        last: OSError = OSError("no address")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if receive_buffer is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
                    _cap_segments(sock, limited_segment(receive_buffer))
                await loop.sock_connect(sock, address)
            except OSError as error:
                sock.close()
                last = error
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise last

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:  # the system CA store, only once an https origin needs it
            self._tls = ssl.create_default_context()
        return self._tls

    def _sample_path(self, connection: Connection) -> None:
        # After a whole response: the window then reflects the segments that came.
        pinned = self._unsampled.pop(connection, None)
        if pinned is None or self._on_path is None or not connection.responses:
            return
        transport = connection.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        sample = sample_path(sock, pinned=pinned) if sock is not None else None
        if sample is not None:
            self._on_path(sample)

    def _fits(self, connection: Connection) -> bool:
        """Its receive buffer is the one a new connection gets now: one pinned under an
        earlier rate limit, burst or share of it (or none) is not reused, or the
        buffers of all connections could hold more than the budget allows."""
        return connection.receive_buffer == self._receive_buffer()

    def _release(self, key: _Key, exchange: Exchange) -> None:
        """The reader is done with ``exchange``: its connection waits for the next
        request once nothing else is in flight on it, or closes."""
        connection = exchange.connection
        connection.release(exchange)
        if self._unsampled:
            self._sample_path(connection)
        if not connection.in_flight:
            self._busy[key].remove(connection)
            if not (self._keep_idle and connection.idle and self._fits(connection)):
                connection.close()
                self._forget(key)
                return
            if not self._idle_buffers:
                connection.drop_large_buffer()
            self._idle.setdefault(key, []).append(connection)
        # As many waiters as requests the connection now takes: the first one back
        # from the server leaves room for a full pipeline, not for one request.
        if connection.pipelinable:
            room = self._pipeline - connection.in_flight
        else:
            room = 0 if connection.in_flight else 1
        for _ in range(room):
            self._wake_one()

    def _forget(self, key: _Key) -> None:
        self._open[key] -= 1
        self._total -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _cap_segments(sock: socket.socket, segment: int) -> None:
    """Announce ``segment`` as this connection's MSS (see ``limited_segment``)."""
    # Refused (a kernel without it): larger segments, and the connection still works.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, segment)


def _split(url: str) -> tuple[_Key, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentOriginError(url, "invalid URL: not http(s)://host/...")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise PermanentOriginError(url, "invalid URL: bad port") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (parts.scheme, parts.hostname, port), target


def map_failure(url: str, error: BaseException) -> OriginError | None:
    """The OriginError for what the client raised, None for what is not the network's."""
    if isinstance(error, OriginError):
        return error
    if isinstance(error, TimeoutError):
        return TransientOriginError(url, "timed out: no data within fetch.read_timeout")
    if isinstance(error, TransientBody):
        return TransientOriginError(url, str(error))
    if isinstance(error, BadResponse):
        return TransientOriginError(url, f"bad response: {error}")
    if isinstance(error, StaleConnection):
        return TransientOriginError(url, "server disconnected")
    if isinstance(error, ssl.SSLError):
        return TransientOriginError(url, f"TLS: {error.reason or error}")
    if isinstance(error, ConnectionError):
        return TransientOriginError(url, "server disconnected")
    if isinstance(error, OSError):
        return TransientOriginError(url, f"network error: {error.strerror or error}")
    return None
