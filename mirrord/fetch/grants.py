"""One rate limit across processes: worker processes spend the daemon's tokens.

A worker process cannot share the daemon's TokenBucket, so both halves of the
arrangement live here. The daemon tells each worker the ``Limit`` in force
(``worker_limit``: the rate, the worker's share of the burst, and how many
tokens to ask for at a time) and pays every ``Want`` out of its one bucket
(``grant``). In the worker, ``GrantedThrottle`` is the Throttle downloads go
through: while limited it asks for tokens and waits for the Grant; limited or
not, it reports the bytes received, for the daemon's rate meter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from mirrord.fetch.httpstatus import limited_receive_buffer
from mirrord.fetch.wire import Grant, Limit, Message, Received, Want

if TYPE_CHECKING:  # worker processes import this module, and need no prometheus_client
    from mirrord.fetch.traffic import TokenBucket

RECEIVED_REPORT_INTERVAL = 0.1


def worker_limit(bucket: TokenBucket, workers: int) -> Limit:
    return Limit(
        rate=bucket.rate,
        # the whole bucket's: the receive buffers' half of it is divided over every
        # connection of the tree (Hello.connections), the workers' as the daemon's
        burst=bucket.burst,
        chunk=max(16 << 10, min(1 << 20, bucket.burst // (2 * workers))),
    )


async def grant(bucket: TokenBucket, want: Want) -> Grant:
    await bucket.consume(want.nbytes)
    return Grant(want.request, want.nbytes)


class GrantedThrottle:
    """The daemon's token bucket, seen from a worker: ask for grants when limited."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self._limit: Limit | None = None  # unlimited until the daemon says otherwise
        self._balance = 0
        self._received = 0
        self._lock = asyncio.Lock()
        self._requests = 0
        self._pending: dict[int, asyncio.Future[int]] = {}

    @property
    def limited(self) -> bool:
        return self._limit is not None and self._limit.rate is not None

    async def consume(self, nbytes: int) -> None:
        self._received += nbytes
        if not self.limited:
            return
        async with self._lock:
            while self._balance < nbytes and (limit := self._limit) and limit.rate is not None:
                self._requests += 1
                request = self._requests
                future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                self._pending[request] = future
                self._send(Want(request, max(limit.chunk, nbytes)))
                self._balance += await future
            self._balance = max(0, self._balance - nbytes)

    def granted(self, grant: Grant) -> None:
        future = self._pending.pop(grant.request, None)
        if future is not None and not future.done():
            future.set_result(grant.nbytes)

    def set_limit(self, limit: Limit) -> None:
        self._limit = replace(limit, chunk=max(1, limit.chunk))
        if limit.rate is None:
            self._balance = 0

    def receive_buffer(self, connections: int) -> int | None:
        if self._limit is None:
            return None
        return limited_receive_buffer(self._limit.rate, self._limit.burst, connections)

    def take_received(self) -> int:
        """The bytes received and not yet reported; the caller reports them."""
        received, self._received = self._received, 0
        return received

    def flush_received(self) -> None:
        if self._received:
            self._send(Received(self.take_received()))

    async def report_received(self) -> None:
        while True:
            await asyncio.sleep(RECEIVED_REPORT_INTERVAL)
            self.flush_received()
