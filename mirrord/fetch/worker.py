"""A fetch worker process: downloads and verifies packages for the daemon.

One event loop on one core can only parse so many HTTP responses a second;
worker processes put the network and the hashing on every core. The daemon
starts ``fetch.processes`` of them (``python -m mirrord.fetch.worker FD``) and
talks to each over a Unix socketpair with JSON lines:

    daemon -> worker   hello (settings), job, grant (rate-limit tokens), limit
    worker -> daemon   done / fail (per job, with its events), want (tokens), rx (bytes)

The worker writes verified temp files into the store's ``tmp/``; landing them
stays with the daemon. It exits when the socket closes, and asks the kernel to
kill it if the daemon dies first.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from mirrord.core.aio import run_async
from mirrord.core.clock import SystemClock
from mirrord.core.config import FetchConfig
from mirrord.core.errors import MirrordError, WorkerProtocolError
from mirrord.core.logs import make_logger
from mirrord.fetch.download import PackageDownloader, crash_boundary
from mirrord.fetch.events import EventRecorder
from mirrord.fetch.origin import OriginClient, limited_receive_buffer
from mirrord.fetch.wire import (
    Done,
    Fail,
    Grant,
    Hello,
    Job,
    Limit,
    Message,
    Received,
    Want,
    decode,
    encode,
    error_to_wire,
)
from mirrord.storage.store import ContentStore

PR_SET_PDEATHSIG = 1
RX_REPORT_INTERVAL = 0.1


def die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the daemon died before prctl took effect
        os._exit(1)


class Channel:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def send(self, message: Message) -> None:
        self._writer.write(encode(message))


class GrantedThrottle:
    """The daemon's token bucket, seen from a worker: ask for grants when limited."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
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
                self._channel.send(Want(request, max(limit.chunk, nbytes)))
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

    def flush_received(self) -> None:
        if self._received:
            self._channel.send(Received(self._received))
            self._received = 0

    async def report_received(self) -> None:
        while True:
            await asyncio.sleep(RX_REPORT_INTERVAL)
            self.flush_received()


class Worker:
    def __init__(
        self,
        origin: OriginClient,
        store: ContentStore,
        config: FetchConfig,
        channel: Channel,
        throttle: GrantedThrottle,
        log: FilteringBoundLogger,
    ) -> None:
        self._origin = origin
        self._store = store
        self._config = config
        self._channel = channel
        self._throttle = throttle
        self._log = log
        self._clock = SystemClock()
        self._rng = random.Random()  # noqa: S311 - backoff jitter

    async def run_job(self, job: Job) -> None:
        events = EventRecorder()
        downloader = PackageDownloader(
            self._origin,
            self._store,
            self._config,
            clock=self._clock,
            log=self._log,
            events=events,
            throttle=self._throttle,
            rng=self._rng,
        )
        reply: Done | Fail
        try:
            with crash_boundary(job.ref, self._log):
                stored = await downloader.download(job.key, job.ref)
        except MirrordError as error:
            reply = Fail(job.job_id, error_to_wire(error), events.recorded())
        else:
            reply = Done(job.job_id, stored, events.recorded())
        self._throttle.flush_received()  # the daemon's rate meter is current when the job ends
        self._channel.send(reply)


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    hello = decode(await reader.readline())
    if not isinstance(hello, Hello):
        raise WorkerProtocolError(f"expected hello first, got {hello.TAG!r}")
    config = hello.fetch
    log = make_logger(hello.log_level, hello.log_format).bind(worker=os.getpid())
    channel = Channel(writer)
    throttle = GrantedThrottle(channel)
    store = ContentStore(Path(hello.storage))
    connections = config.concurrency
    async with OriginClient.open(
        hello.origin,
        config,
        receive_buffer=lambda: throttle.receive_buffer(connections),
    ) as origin:
        worker = Worker(origin, store, config, channel, throttle, log)
        async with asyncio.TaskGroup() as group:
            reporter = group.create_task(throttle.report_received())
            jobs: set[asyncio.Task[None]] = set()
            while line := await reader.readline():
                match decode(line):
                    case Job() as job:
                        task = group.create_task(worker.run_job(job))
                        jobs.add(task)
                        task.add_done_callback(jobs.discard)
                    case Grant() as grant:
                        throttle.granted(grant)
                    case Limit() as limit:
                        throttle.set_limit(limit)
                    case other:
                        raise WorkerProtocolError(f"a worker takes no {other.TAG!r} message")
            # The daemon closed the socket: it is stopping (or gone). Drop everything.
            reporter.cancel()
            for task in jobs:
                task.cancel()
    writer.close()


def main(argv: list[str]) -> int:
    fd, parent = int(argv[1]), int(argv[2])
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    sock = socket.socket(fileno=fd)
    try:
        run_async(serve(sock))
    except (ConnectionError, asyncio.IncompleteReadError):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
