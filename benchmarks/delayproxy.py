"""A TCP proxy that puts a distant link between a client and a loopback server.

This machine's kernel has neither ``netem`` nor ``fq`` (no delay qdisc, no
per-flow pacing: see benchmarks/README.md), so the link is made in user
space. Each direction of each connection is a bottleneck followed by a delay
line:

- the bottleneck serialises the bytes at the per-connection rate: a chunk
  read from the sender occupies it for ``len / rate`` seconds, and the next
  read waits until it is free, so the sender is held back by TCP flow control
  as by a slow link (the bytes queued in the proxy stay at about rate x delay);
- the delay line releases each chunk RTT/2 after it left the bottleneck, in
  order, so a request and its response each pay half the round trip while
  many chunks are in flight at once (throughput is not serialised by the delay);
- a new connection carries no data for one RTT, as a TCP handshake would.

Not modelled: TCP slow start (a connection has its rate from its first byte),
loss, jitter, a bottleneck shared by connections.

    python -m benchmarks.delayproxy LISTEN_PORT TARGET_PORT RTT_MS RATE_MBIT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

CHUNK = 64 * 1024
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Link:
    rtt: float  # seconds
    rate: float  # bytes per second, per connection and direction

    @property
    def one_way(self) -> float:
        return self.rtt / 2


class Bottleneck:
    """When each chunk may be read after and delivered at (pure; times are the caller's)."""

    def __init__(self, link: Link, opened_at: float) -> None:
        self.link = link
        self.free_at = opened_at

    def send(self, now: float, size: int) -> float:
        """A chunk of ``size`` arrives at ``now``: the time it reaches the far end.

        Afterwards ``free_at`` is when the bottleneck can take the next chunk.
        """
        self.free_at = max(now, self.free_at) + size / self.link.rate
        return self.free_at + self.link.one_way


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    bottleneck: Bottleneck,
    clock: Callable[[], float],
) -> None:
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while chunk := await reader.read(CHUNK):
            line.put_nowait((bottleneck.send(clock(), len(chunk)), chunk))
            await asyncio.sleep(max(0.0, bottleneck.free_at - clock()))
        line.put_nowait((max(clock(), bottleneck.free_at) + bottleneck.link.one_way, b""))

    async def deliver() -> None:
        while True:
            due, chunk = await line.get()
            await asyncio.sleep(max(0.0, due - clock()))
            if not chunk:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    async with asyncio.TaskGroup() as group:
        group.create_task(receive())
        group.create_task(deliver())


async def _connection(
    link: Link,
    target: int,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    loop = asyncio.get_running_loop()
    opened = loop.time()
    try:
        server_reader, server_writer = await asyncio.open_connection(HOST, target)
    except OSError:
        client_writer.transport.abort()
        return
    try:
        async with asyncio.TaskGroup() as group:
            # the handshake: the client's first byte leaves one RTT after its SYN
            upstream = Bottleneck(link, opened + link.rtt)
            group.create_task(_pipe(client_reader, server_writer, upstream, loop.time))
            downstream = Bottleneck(link, opened)
            group.create_task(_pipe(server_reader, client_writer, downstream, loop.time))
    except* (ConnectionError, OSError):
        pass  # a reset on one side: drop both, as the far end would see it
    finally:
        for writer in (client_writer, server_writer):
            writer.transport.abort()


async def serve(listen: int, target: int, link: Link) -> None:
    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.create_task(_connection(link, target, reader, writer))

    async with asyncio.TaskGroup() as connections:
        server = await asyncio.start_server(accept, HOST, listen, backlog=1024)
        async with server:
            await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        raise SystemExit(__doc__)
    listen, target = int(argv[1]), int(argv[2])
    link = Link(rtt=float(argv[3]) / 1000, rate=float(argv[4]) * 1e6 / 8)
    try:
        import uvloop
    except ImportError:  # the standard loop works too, with more CPU per chunk
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(listen, target, link))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
