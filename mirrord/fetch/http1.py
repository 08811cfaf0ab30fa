"""One HTTP/1.1 connection to the origin: a response head, then its body.

aiohttp's request path was ~14 % of a sync's samples and 14 MiB of every fetch
worker (and ~0.1 s of every start, most of it loading the CA store at import);
the origin needs only GETs, response heads and bodies. Bytes go
from the socket straight into buffers we own (``asyncio.BufferedProtocol``)
and reach the hashing and the file as memoryviews of them. The pool and the
error mapping are ``mirrord.fetch.pool``'s.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Literal, cast

READ_SIZE = 256 * 1024  # one buffer the socket reads into, sliced among the chunks
# A connection reads into SMALL_READ until a body longer than that (or of unknown
# length) comes, then into READ_SIZE: one that carries only small packages keeps 32 KiB,
# not 256 (issue 15: 16 connections a process); 256 KiB reads keep large files cheap
# (64 KiB cost +11 % CPU).
SMALL_READ = 32 * 1024
MIN_READ = 16 * 1024  # a buffer with less room left than this is replaced
PAUSE_ABOVE = 128 * 1024  # bytes received and not yet consumed: stop reading (as aiohttp)
RESUME_BELOW = 64 * 1024
MAX_HEAD = 64 * 1024
HEAD_WINDOW = 8 * 1024  # a head is looked for in this much of a read before it is collected
DRAIN_MAX = 64 * 1024  # a response given up with at most this much left is read and dropped
MAX_LINE = 4096

Chunk = memoryview | bytes
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
_SPACE = " \t\n\r\x0b\x0c"  # the ASCII whitespace bytes.strip() strips, no more


class StaleConnection(Exception):
    """A reused connection closed before a byte of the response: retry on a fresh one."""


class BadResponse(Exception):
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
    # One decode of the whole head: latin-1 maps each byte to one character, so
    # the checks below see what they would see in the bytes.
    status, *fields = data.decode("latin-1").split("\r\n")
    version, _, rest = status.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in _VERSIONS or len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise BadResponse(f"not an HTTP/1.x status line: {status[:80]!r}")
    headers: dict[str, str] = {}
    for line in fields:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip(_SPACE) or line[0] in " \t":
            raise BadResponse(f"malformed header field: {line[:80]!r}")
        key = name.lower()
        text = value.strip(_SPACE)
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    length = headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()):
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1 or not (only := values.pop()).isascii() or not only.isdigit():
            raise BadResponse(f"bad Content-Length {length!r}")
        headers["content-length"] = only
    return Head(int(code), reason, headers, version == "HTTP/1.0")


def buffer_unshared(buffer: bytearray) -> bool:
    """Whether no memoryview of ``buffer`` is alive: then it can be read into again.

    A bytearray refuses to resize while exported; appending one byte and taking it
    back asks exactly that, without zeroing 256 KiB for a new buffer.
    """
    if not buffer:
        return False
    try:
        buffer.append(0)
    except BufferError:
        return False
    buffer.pop()
    return True


class Exchange:
    """One request sent on a connection, and what came of its response so far."""

    __slots__ = ("abandoned", "chunks", "connection", "done", "error", "head", "received_any")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.head: Head | None = None
        self.chunks: deque[Chunk] = deque()
        self.done = False  # the whole body is in ``chunks`` (or was drained)
        self.error: BaseException | None = None
        self.received_any = False
        self.abandoned = False  # released before its end: the rest of the body is dropped

    async def read_head(self) -> Head:
        while self.head is None:
            if self.error is not None:
                raise self.error
            await self.connection.wait()
        return self.head

    def next_chunk(self) -> Chunk | None:
        """A chunk received, None at the end; raises what went wrong."""
        if self.chunks:
            chunk = self.chunks.popleft()
            self.connection.consumed(len(chunk))
            return chunk
        if self.error is not None:
            raise self.error
        if self.done:
            return None
        raise BlockingIOError


class Connection(asyncio.BufferedProtocol):
    """One keep-alive connection: requests go out in order, responses are parsed in order.

    More than one request may be in flight (HTTP/1.1 pipelining): a response's
    head is parsed where the body before it ends, and each response's chunks
    wait in its own Exchange for whoever reads it.
    """

    def __init__(self, read_timeout: float) -> None:
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True  # until a response says close, the stream breaks or ends
        self.receive_buffer: int | None = None  # SO_RCVBUF it was opened with (None: autotuned)
        self.responses = 0  # responses received whole
        self.in_flight = 0  # requests sent and not yet released by their readers
        self._buffer = bytearray(0)
        self._view = memoryview(self._buffer)
        self._fill = 0
        self._incoming: deque[Exchange] = deque()  # sent; the first is being received
        self._head: bytearray | None = None  # collecting the first's head; None: in a body or idle
        self._mode: Literal["length", "chunked", "eof", "done"] = "done"
        self._remaining = 0  # body bytes left (length) or in this chunk (chunked)
        self._chunk_state = "size"  # size, data, data_end, trailer
        self._line = bytearray()
        self._queued = 0  # bytes received, in chunks nobody has taken yet
        self._paused = False
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0

    # --- protocol callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buffer) - self._fill < MIN_READ:
            self._view.release()
            # Once large, a connection stays large: it replaces a buffer still shared
            # by its chunks with one of the same size, as many times as bodies come.
            large = len(self._buffer) == READ_SIZE or self._large_body()
            size = READ_SIZE if large else SMALL_READ
            # not unshared: a chunk of it is still to be hashed or written
            if len(self._buffer) < size or not buffer_unshared(self._buffer):
                self._buffer = bytearray(size)
            self._view = memoryview(self._buffer)
            self._fill = 0
        return self._view[self._fill :]

    def _large_body(self) -> bool:
        """In a body that may not fit a SMALL_READ buffer."""
        if self._head is not None:  # a head (and the start of its body) comes next
            return False
        return self._mode in ("chunked", "eof") or (
            self._mode == "length" and self._remaining > SMALL_READ
        )

    def drop_large_buffer(self) -> None:
        """Between responses: a buffer above SMALL_READ goes (one is made as the next needs)."""
        if len(self._buffer) > SMALL_READ:
            self._view.release()
            self._buffer = bytearray(0)
            self._view = memoryview(self._buffer)
            self._fill = 0

    @property
    def buffer_size(self) -> int:
        """Bytes of the buffer the socket reads into now."""
        return len(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        start, stop = self._fill, self._fill + nbytes
        self._fill = stop
        self._last_data = self._loop.time()
        try:
            self._feed(self._view[start:stop])
        except BadResponse as error:
            self._fail(error)
        self._wake()

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended()

    def pause_writing(self) -> None:  # requests are a few hundred bytes
        pass

    def resume_writing(self) -> None:
        pass

    # --- decoding --------------------------------------------------------------

    def _feed(self, data: Chunk) -> None:
        while data:
            if not self._incoming:
                self.reusable = False  # bytes nobody asked for
                return
            if self._head is not None:
                data = self._feed_head(data)
            elif self._mode == "length":
                take = min(len(data), self._remaining)
                self._push(data[:take])
                self._remaining -= take
                data = data[take:]
                if self._remaining == 0:
                    self._body_done()
            elif self._mode == "chunked":
                data = self._feed_chunked(data)
            else:  # "eof": the body runs to the end of the connection
                self._push(data)
                return

    def _feed_head(self, data: Chunk) -> Chunk:
        """Take the first response's head from ``data``; return what follows it."""
        assert self._head is not None
        self._incoming[0].received_any = True
        collected = self._head
        if not collected:  # a head from its first byte: no copy of the body behind it
            window = bytes(data[:HEAD_WINDOW])
            end = window.find(b"\r\n\r\n")
            if end >= 0:
                self._head = None
                self._start_body(parse_head(window[:end]))
                return data[end + 4 :]
        before = len(collected)
        collected += data[: MAX_HEAD + 4]
        end = collected.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(collected) > MAX_HEAD:
                raise BadResponse(f"no end of the response head within {MAX_HEAD} bytes")
            return data[len(data) :]
        self._head = None
        self._start_body(parse_head(bytes(collected[:end])))
        return data[end + 4 - before :]

    def _start_body(self, head: Head) -> None:
        if 100 <= head.status < 200:  # an interim response: the real one follows
            self._head = bytearray()
            return
        self._incoming[0].head = head
        if not head.keep_alive:
            self.reusable = False
        coding = head.headers.get("transfer-encoding", "").lower()
        if head.status in (204, 304):
            self._body_done()
        elif coding:
            if coding.rsplit(",", 1)[-1].strip() != "chunked":
                raise BadResponse(f"unsupported Transfer-Encoding {coding!r}")
            self._mode, self._chunk_state = "chunked", "size"
        elif "content-length" in head.headers:
            self._remaining = int(head.headers["content-length"])
            self._mode = "length"
            if not self._remaining:
                self._body_done()
        else:
            self._mode, self.reusable = "eof", False

    def _body_done(self) -> None:
        exchange = self._incoming.popleft()
        exchange.done = True
        self.responses += 1
        self._mode = "done"
        if self._incoming:  # the next response's head starts here
            self._head = bytearray()

    def _feed_chunked(self, data: Chunk) -> Chunk:
        """Decode chunked body bytes; return what follows the body's end."""
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
                    raise BadResponse("chunk size line too long")
                continue
            line = bytes(self._line).rstrip(b"\r\n")
            self._line.clear()
            if state == "data_end":
                if line:
                    raise BadResponse("chunk data longer than its size")
                self._chunk_state = "size"
            elif state == "size":
                size = line.split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise BadResponse(f"bad chunk size {size[:40]!r}") from None
                self._chunk_state = "data" if self._remaining else "trailer"
            elif not line:  # the blank line after the trailer fields
                self._body_done()
        return data[at:]

    def _push(self, data: Chunk) -> None:
        exchange = self._incoming[0]
        if not data or exchange.abandoned:
            return
        exchange.chunks.append(data)
        self._queued += len(data)
        if self._queued > PAUSE_ABOVE and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def consumed(self, size: int) -> None:
        """``size`` bytes of chunks were taken (or dropped): read again below RESUME_BELOW."""
        self._queued -= size
        if self._paused and self._queued < RESUME_BELOW and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _ended(self) -> None:
        """The server closed: the first response ends or breaks, later ones never come."""
        self.reusable = False
        if not self._incoming:  # idle, or broken already
            self._wake()
            return
        first = self._incoming[0]
        error: BaseException | None = None
        if self._head is not None:
            if not first.received_any and self.responses:
                error = StaleConnection()  # a kept-alive connection the server had closed
            elif not first.received_any:
                error = ConnectionResetError("server disconnected before a response")
            else:
                error = BadResponse("connection closed inside the response head")
        elif self._mode == "eof":
            self._body_done()
        else:
            what = f"{self._remaining} more bytes" if self._mode == "length" else "the last chunk"
            error = TransientBody(f"body cut short: connection closed awaiting {what}")
        self._break(error)

    def _fail(self, error: BaseException) -> None:
        self.reusable = False
        self._break(error)
        if self.transport is not None:
            self.transport.abort()

    def _break(self, error: BaseException | None) -> None:
        """No more responses: ``error`` for the one being received, retry the rest."""
        for at, exchange in enumerate(self._incoming):
            exchange.error = error if at == 0 and error is not None else StaleConnection()
        self._incoming.clear()
        self._head = None
        self._mode = "done"
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- the readers' side -------------------------------------------------------

    @property
    def pipelinable(self) -> bool:
        """Whether a request may go out behind those in flight: the server has kept
        this connection alive before, and nothing broke or asked to close since."""
        return self.responses > 0 and self.reusable

    @property
    def backlog(self) -> int:
        """Body bytes known to be still to come before a request sent now is answered."""
        return self._remaining if self._mode == "length" else 0

    @property
    def idle(self) -> bool:
        """Nothing in flight and fit for the next request."""
        return not self._incoming and self.reusable

    def send(self, request: bytes) -> Exchange:
        assert self.transport is not None
        exchange = Exchange(self)
        if not self._incoming:
            self._head = bytearray()
        self._incoming.append(exchange)
        self.in_flight += 1
        self.transport.write(request)
        return exchange

    def release(self, exchange: Exchange) -> None:
        """The reader is done with ``exchange``; what it left unread is dropped.

        A response still arriving is drained when it is short and the connection
        carries requests behind it (a 404 page, say); otherwise the connection is
        given up and the requests behind it are retried elsewhere.
        """
        self.in_flight -= 1
        dropped = sum(len(chunk) for chunk in exchange.chunks)
        exchange.chunks.clear()
        if dropped:
            self.consumed(dropped)
        if exchange.done or exchange.error is not None:
            return
        exchange.abandoned = True
        drainable = (
            len(self._incoming) > 1
            and self._incoming[0] is exchange
            and self._head is None
            and self._mode == "length"
            and self._remaining <= DRAIN_MAX
        )
        if not drainable:
            self._fail(ConnectionAbortedError("response given up before its end"))

    async def wait(self) -> None:
        """Until more arrives (or the end); TimeoutError after read_timeout of nothing."""
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._last_data = max(self._last_data, self._loop.time())
        if self._timer is None:
            self._timer = self._loop.call_at(
                self._last_data + self._read_timeout, self._check_timeout
            )
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._waiters:
            return
        due = self._last_data + self._read_timeout
        if self._paused:  # the readers are behind, not the server
            self._last_data = self._loop.time()
            due = self._last_data + self._read_timeout
        if self._loop.time() >= due:
            self._fail(TimeoutError())
        else:  # data came meanwhile: one timer per wait, moved lazily, not per chunk
            self._timer = self._loop.call_at(due, self._check_timeout)

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

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def chunks(self) -> Body:
        return self

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> Chunk:
        exchange = self._exchange
        while True:
            try:
                chunk = exchange.next_chunk()
            except BlockingIOError:
                await exchange.connection.wait()
                continue
            if chunk is None:
                raise StopAsyncIteration
            return chunk
