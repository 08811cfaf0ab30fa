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
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from mirrord.core.aio import run_async
from mirrord.core.clock import SystemClock
from mirrord.core.config import FetchConfig
from mirrord.core.errors import InternalError, MirrordError
from mirrord.core.logs import make_logger
from mirrord.core.model import ArchKey, PackageRef
from mirrord.fetch.download import PackageDownloader
from mirrord.fetch.events import JobEvents
from mirrord.fetch.origin import OriginClient, limited_receive_buffer
from mirrord.fetch.wire import Message, decode, encode, error_to_wire
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
        self.limited = False
        self.chunk = 1 << 18
        self._balance = 0
        self._received = 0
        self._lock = asyncio.Lock()
        self._requests = 0
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._burst = 4 << 20
        self._rate = 0.0

    async def consume(self, nbytes: int) -> None:
        self._received += nbytes
        if not self.limited:
            return
        async with self._lock:
            while self.limited and self._balance < nbytes:
                self._requests += 1
                request = self._requests
                future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                self._pending[request] = future
                self._channel.send({"t": "want", "rid": request, "n": max(self.chunk, nbytes)})
                self._balance += await future
            self._balance = max(0, self._balance - nbytes)

    def granted(self, request: int, nbytes: int) -> None:
        future = self._pending.pop(request, None)
        if future is not None and not future.done():
            future.set_result(nbytes)

    def set_limit(self, limited: bool, chunk: int, burst: int = 4 << 20, rate: float = 0) -> None:
        self.limited = limited
        self.chunk = max(1, chunk)
        self._burst = burst
        self._rate = rate
        if not limited:
            self._balance = 0

    def receive_buffer(self, connections: int) -> int | None:
        return limited_receive_buffer(
            self._rate if self.limited else None, self._burst, connections
        )

    def flush_received(self) -> None:
        if self._received:
            self._channel.send({"t": "rx", "n": self._received})
            self._received = 0

    async def report_received(self) -> None:
        while True:
            await asyncio.sleep(RX_REPORT_INTERVAL)
            self.flush_received()


def fetch_config(data: dict[str, Any]) -> FetchConfig:
    return FetchConfig(
        concurrency=int(data["concurrency"]),
        per_host=int(data["per_host"]),
        connect_timeout=float(data["connect_timeout"]),
        read_timeout=float(data["read_timeout"]),
        attempts=int(data["attempts"]),
        retry_max_time=float(data["retry_max_time"]),
    )


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
        self._arches: dict[str, ArchKey] = {}

    def _arch(self, text: str) -> ArchKey:
        key = self._arches.get(text)
        if key is None:
            key = self._arches[text] = ArchKey.parse(text)
        return key

    async def run_job(self, message: Message) -> None:
        events = JobEvents()
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
        job_id = message["id"]
        try:
            stored = await downloader.download(
                self._arch(message["key"]),
                PackageRef(message["filename"], message["checksum"], int(message["size"])),
            )
        except MirrordError as error:
            reply: Message = {"t": "fail", "id": job_id, "error": error_to_wire(error)}
        except Exception as error:  # a bug costs this package, not the worker
            self._log.exception("fetch.worker.crashed", package=message.get("filename"))
            reply = {"t": "fail", "id": job_id, "error": error_to_wire(InternalError(repr(error)))}
        else:
            reply = {
                "t": "done",
                "id": job_id,
                "sha256": stored.sha256,
                "size": stored.size,
            }
        reply["events"] = events.wire()
        self._throttle.flush_received()  # the daemon's rate meter is current when the job ends
        self._channel.send(reply)


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    hello = decode(await reader.readline())
    config = fetch_config(hello["fetch"])
    log = make_logger(hello["log_level"], hello["log_format"]).bind(worker=os.getpid())
    channel = Channel(writer)
    throttle = GrantedThrottle(channel)
    store = ContentStore(Path(hello["storage"]))
    connections = config.concurrency
    async with OriginClient.open(
        hello["origin"],
        config,
        receive_buffer=lambda: throttle.receive_buffer(connections),
    ) as origin:
        worker = Worker(origin, store, config, channel, throttle, log)
        async with asyncio.TaskGroup() as group:
            reporter = group.create_task(throttle.report_received())
            jobs: set[asyncio.Task[None]] = set()
            while line := await reader.readline():
                message = decode(line)
                kind = message["t"]
                if kind == "job":
                    task = group.create_task(worker.run_job(message))
                    jobs.add(task)
                    task.add_done_callback(jobs.discard)
                elif kind == "grant":
                    throttle.granted(int(message["rid"]), int(message["n"]))
                elif kind == "limit":
                    throttle.set_limit(
                        bool(message["on"]),
                        int(message["chunk"]),
                        int(message.get("burst", 4 << 20)),
                        float(message.get("rate") or 0),
                    )
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
