"""A small HTTP/1.1 client for streamed GET bodies: the package download path.

aiohttp's request path was ~14 % of a sync's samples and 14 MiB of every fetch
worker; a download needs only a GET, a response head and a body. Bytes go
from the socket straight into buffers we own (``asyncio.BufferedProtocol``)
and reach the hashing and the file as memoryviews of them. Connections are
kept alive in a pool bounded like aiohttp's (total and per host). Failures
enter mirrord's error tree here.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urljoin, urlsplit

from mirrord.core.errors import OriginError, PermanentOriginError, TransientOriginError

READ_SIZE = 256 * 1024  # one buffer the socket reads into, sliced among the chunks
MIN_READ = 16 * 1024  # a buffer with less room left than this is replaced
PAUSE_ABOVE = 128 * 1024  # bytes received and not yet consumed: stop reading (as aiohttp)
RESUME_BELOW = 64 * 1024
MAX_HEAD = 64 * 1024
MAX_LINE = 4096
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})

Chunk = memoryview | bytes


class _Stale(Exception):
    """A reused connection closed before a byte of the response: retry on a fresh one."""


class _Garbage(Exception):
    """What the server sent is not HTTP/1.1 we understand."""


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    http10: bool = False

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return "keep-alive" in connection if self.http10 else "close" not in connection


def parse_head(data: bytes) -> Head:
    """Status line and fields of a response head (without its blank line)."""
    lines = data.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise _Garbage(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in b" \t":
            raise _Garbage(f"malformed header field: {line[:80]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    length = headers.get("content-length")
    if length is not None:
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1 or not (only := values.pop()).isascii() or not only.isdigit():
            raise _Garbage(f"bad Content-Length {length!r}")
        headers["content-length"] = only
    return Head(int(code), reason.decode("latin-1"), headers, version == b"HTTP/1.0")


def buffer_unshared(buffer: bytearray) -> bool:
    """Whether no memoryview of ``buffer`` is alive: then it can be read into again.

    A bytearray refuses to resize while exported; appending one byte and taking it
    back asks exactly that, without zeroing 256 KiB for a new buffer.
    """
    if len(buffer) != READ_SIZE:
        return False
    try:
        buffer.append(0)
    except BufferError:
        return False
    buffer.pop()
    return True


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection: parses a response head, then decodes its body."""

    def __init__(self, read_timeout: float) -> None:
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._buffer = bytearray(0)
        self._view = memoryview(self._buffer)
        self._fill = 0
        self._head: bytearray | None = None  # collecting a head; None: in a body or idle
        self.head: Head | None = None
        self._mode: Literal["length", "chunked", "eof", "done"] = "done"
        self._remaining = 0  # body bytes left (length) or in this chunk (chunked)
        self._chunk_state = "size"  # size, data, data_end, trailer
        self._line = bytearray()
        self._chunks: deque[Chunk] = deque()
        self._queued = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self.received_any = False
        self.reusable = False

    # --- protocol callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buffer) - self._fill < MIN_READ:
            self._view.release()
            if not buffer_unshared(self._buffer):  # a chunk of it is still to be hashed or written
                self._buffer = bytearray(READ_SIZE)
            self._view = memoryview(self._buffer)
            self._fill = 0
        return self._view[self._fill :]

    def buffer_updated(self, nbytes: int) -> None:
        start, stop = self._fill, self._fill + nbytes
        self._fill = stop
        self._last_data = self._loop.time()
        self.received_any = True
        try:
            end = -1
            if self._head is not None and not self._head:  # a head from its first byte
                end = self._buffer.find(b"\r\n\r\n", start, stop)  # no copy to search
            if end >= 0:
                self._head = None
                self._start_body(parse_head(bytes(self._buffer[start:end])))
                if self._head is None:
                    self._feed(self._view[end + 4 : stop])
                elif end + 4 < stop:  # after an interim response
                    self._feed(bytes(self._buffer[end + 4 : stop]))
            else:
                self._feed(self._view[start:stop])
        except _Garbage as error:
            self._fail(error)
        self._wake()

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    def pause_writing(self) -> None:  # requests are a few hundred bytes
        pass

    def resume_writing(self) -> None:
        pass

    # --- decoding --------------------------------------------------------------

    def _feed(self, data: memoryview | bytes) -> None:
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    raise _Garbage(f"no end of the response head within {MAX_HEAD} bytes")
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head = None
            self._start_body(parse_head(head))
            if rest:
                self._feed(rest)
            return
        if self._mode == "length":
            if len(data) > self._remaining:
                self.reusable = False  # bytes beyond the body: nothing we asked for
                data = data[: self._remaining]
            self._push(data)
            self._remaining -= len(data)
            if self._remaining == 0:
                self._mode = "done"
        elif self._mode == "chunked":
            self._feed_chunked(data)
        elif self._mode == "eof":
            self._push(data)
        else:
            self.reusable = False  # unasked-for bytes on an idle connection

    def _start_body(self, head: Head) -> None:
        if 100 <= head.status < 200:  # an interim response: the real one follows
            self._head = bytearray()
            return
        self.head = head
        self.reusable = head.keep_alive
        coding = head.headers.get("transfer-encoding", "").lower()
        if head.status in (204, 304):
            self._mode = "done"
        elif coding:
            if coding.rsplit(",", 1)[-1].strip() != "chunked":
                raise _Garbage(f"unsupported Transfer-Encoding {coding!r}")
            self._mode, self._chunk_state = "chunked", "size"
        elif "content-length" in head.headers:
            self._remaining = int(head.headers["content-length"])
            self._mode = "length" if self._remaining else "done"
        else:
            self._mode, self.reusable = "eof", False

    def _feed_chunked(self, data: memoryview | bytes) -> None:
        at, end = 0, len(data)
        while at < end and self._mode == "chunked":
            state = self._chunk_state
            if state == "data":
                take = min(self._remaining, end - at)
                self._push(data[at : at + take])
                at += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = "data_end"
                continue
            window = bytes(data[at : at + 64])  # chunk lines are short: copy only a little
            newline = window.find(b"\n")
            taken = window if newline < 0 else window[: newline + 1]
            self._line += taken
            at += len(taken)
            if newline < 0:
                if len(self._line) > MAX_LINE:
                    raise _Garbage("chunk size line too long")
                continue
            line = bytes(self._line).rstrip(b"\r\n")
            self._line.clear()
            if state == "data_end":
                if line:
                    raise _Garbage("chunk data longer than its size")
                self._chunk_state = "size"
            elif state == "size":
                size = line.split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise _Garbage(f"bad chunk size {size[:40]!r}") from None
                self._chunk_state = "data" if self._remaining else "trailer"
            elif not line:  # the blank line after the trailer fields
                self._mode = "done"
        if at < end:
            self.reusable = False

    def _push(self, data: memoryview | bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued > PAUSE_ABOVE and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _ended(self, exc: Exception | None = None) -> None:
        self.reusable = False
        if self._error is not None:
            pass
        elif self._head is not None:
            if not self.received_any and self.reused:
                self._error = _Stale()
            elif not self.received_any:
                self._error = ConnectionResetError("server disconnected before a response")
            else:
                self._error = _Garbage("connection closed inside the response head")
        elif self._mode == "eof":
            self._mode = "done"
        elif self._mode != "done":
            what = f"{self._remaining} more bytes" if self._mode == "length" else "the last chunk"
            self._error = TransientBody(f"body cut short: connection closed awaiting {what}")
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the consumer's side -----------------------------------------------------

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self._head = bytearray()
        self.head = None
        self.received_any = False
        self._mode = "done"
        self.transport.write(request)

    async def wait(self) -> None:
        """Until more arrives (or the end); TimeoutError after read_timeout of nothing."""
        self._waiter = waiter = self._loop.create_future()
        self._last_data = max(self._last_data, self._loop.time())
        if self._timer is None:
            self._timer = self._loop.call_at(
                self._last_data + self._read_timeout, self._check_timeout
            )
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_timeout(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        due = self._last_data + self._read_timeout
        if self._loop.time() >= due:
            self._fail(TimeoutError())
            waiter.set_exception(TimeoutError())
        else:  # data came meanwhile: one timer per wait, moved lazily, not per chunk
            self._timer = self._loop.call_at(due, self._check_timeout)

    async def read_head(self) -> Head:
        while self.head is None:
            if self._error is not None:
                raise self._error
            await self.wait()
        return self.head

    def next_chunk(self) -> Chunk | None:
        """A chunk received, None at the end; raises what went wrong."""
        if self._chunks:
            chunk = self._chunks.popleft()
            self._queued -= len(chunk)
            if self._paused and self._queued < RESUME_BELOW and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            return chunk
        if self._error is not None:
            raise self._error
        if self._mode == "done":
            return None
        raise BlockingIOError

    @property
    def finished(self) -> bool:
        return self._mode == "done" and not self._chunks and self._error is None

    def close(self) -> None:
        self.reusable = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.closed:
            self.transport.close()
            self.closed = True


class TransientBody(Exception):
    """The body ended before its length (mapped to TransientOriginError)."""


class Body:
    """A response body as the chunks the socket delivered: ``async for c in body.chunks()``."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    def chunks(self) -> Body:
        return self

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> Chunk:
        connection = self._connection
        while True:
            try:
                chunk = connection.next_chunk()
            except BlockingIOError:
                await connection.wait()
                continue
            if chunk is None:
                raise StopAsyncIteration
            return chunk


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
    """Keep-alive connections, at most ``limit`` in all and ``per_host`` to one host."""

    def __init__(
        self,
        *,
        limit: int,
        per_host: int,
        connect_timeout: float,
        read_timeout: float,
        user_agent: str,
        receive_buffer: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._limit = limit
        self._per_host = per_host
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._user_agent = user_agent
        self._receive_buffer = receive_buffer
        self._idle: dict[_Key, list[_Connection]] = {}
        self._open: dict[_Key, int] = {}  # per host: idle and busy
        self._total = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    @asynccontextmanager
    async def get(self, url: str, headers: dict[str, str]) -> AsyncIterator[Response]:
        """GET ``url`` following redirects; the body is read inside the block."""
        for _ in range(MAX_REDIRECTS + 1):
            key, target = _split(url)
            connection = await self._request(url, key, target, headers)
            head = connection.head
            assert head is not None
            location = head.headers.get("location")
            if head.status in REDIRECTS and location:
                self._release(key, connection)
                url = urljoin(url, location)
                continue
            try:
                yield Response(url, head.status, head.reason, head.headers, Body(connection))
            finally:
                self._release(key, connection)
            return
        raise TransientOriginError(url, f"more than {MAX_REDIRECTS} redirects")

    async def _request(
        self, url: str, key: _Key, target: str, headers: dict[str, str]
    ) -> _Connection:
        request = self._request_bytes(key, target, headers)
        for fresh in (False, True):
            connection = await self._acquire(url, key, fresh)
            try:
                connection.send(request)
                await connection.read_head()
            except _Stale:
                self._discard(key, connection)
                continue
            except BaseException:
                self._discard(key, connection)
                raise
            return connection
        raise TransientOriginError(url, "server disconnected")  # a fresh one closed at once

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

    async def _acquire(self, url: str, key: _Key, fresh: bool) -> _Connection:
        while True:
            idle = self._idle.get(key)
            while idle and not fresh:
                connection = idle.pop()
                if connection.closed or not connection.reusable:
                    self._forget(key)
                    continue
                connection.reused = True
                return connection
            if self._total >= self._limit:
                self._close_one_idle()
            if self._total < self._limit and self._open.get(key, 0) < self._per_host:
                self._open[key] = self._open.get(key, 0) + 1
                self._total += 1
                try:
                    return await self._connect(url, key)
                except BaseException:
                    self._forget(key)
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the turn on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _close_one_idle(self) -> None:
        for key, connections in self._idle.items():
            if connections:
                connections.pop(0).close()
                self._forget(key)
                return

    async def _connect(self, url: str, key: _Key) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                sock = await self._connect_socket(infos)
                tls = self._tls_context() if scheme == "https" else None
                connection = _Connection(self._read_timeout)
                await loop.create_connection(
                    lambda: connection,
                    sock=sock,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise TransientOriginError(
                url, "timed out connecting (fetch.connect_timeout)"
            ) from None
        except ssl.SSLError as error:
            raise TransientOriginError(url, f"TLS: {error.reason or error}") from None
        except OSError as error:
            raise TransientOriginError(url, f"cannot connect: {error.strerror or error}") from None
        return connection

    async def _connect_socket(self, infos: Sequence[tuple[Any, ...]]) -> socket.socket:
        loop = asyncio.get_running_loop()
        last: OSError = OSError("no address")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                size = self._receive_buffer()
                if size is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
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

    def _release(self, key: _Key, connection: _Connection) -> None:
        if connection.reusable and connection.finished and not connection.closed:
            self._idle.setdefault(key, []).append(connection)
            self._wake_one()
        else:
            self._discard(key, connection)

    def _discard(self, key: _Key, connection: _Connection) -> None:
        connection.close()
        self._forget(key)

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
    if isinstance(error, _Garbage):
        return TransientOriginError(url, f"bad response: {error}")
    if isinstance(error, ssl.SSLError):
        return TransientOriginError(url, f"TLS: {error.reason or error}")
    if isinstance(error, ConnectionError):
        return TransientOriginError(url, "server disconnected")
    if isinstance(error, OSError):
        return TransientOriginError(url, f"network error: {error.strerror or error}")
    return None
