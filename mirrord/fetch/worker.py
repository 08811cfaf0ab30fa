"""A fetch worker process: downloads and verifies packages for the daemon.

One event loop on one core can only parse so many HTTP responses a second;
worker processes put the network and the hashing on every core. The daemon
starts ``fetch.processes`` of them (``python -m mirrord.fetch.worker FD PID``,
the socket's descriptor and the daemon's pid) and talks to each over a Unix
socketpair, one typed message a line (``mirrord.fetch.wire``): a Hello with
the settings first, then Jobs, Limits and Grants. The worker answers each Job
with Done or Fail, carrying the job's events for the daemon's metrics; while
a rate limit is in force it asks for tokens with Want (``mirrord.fetch.grants``).

Like a download on the daemon's own loop, a worker names each verified
package under ``objects/`` itself; making it durable and recording it (the
group commit) stays with the daemon. It logs through the daemon too (``Log``
messages): no logging library in each worker. The worker exits when the socket
closes, and asks the kernel to kill it if the daemon dies first.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mirrord.core.aio import run_async
from mirrord.core.clock import SystemClock
from mirrord.core.config import FetchConfig
from mirrord.core.errors import MirrordError, WorkerProtocolError
from mirrord.core.eventlog import EventLog
from mirrord.core.heap import cap_arenas
from mirrord.fetch.bodies import DownloadClient
from mirrord.fetch.download import PackageDownloader, crash_boundary
from mirrord.fetch.events import EventRecorder
from mirrord.fetch.grants import GrantedThrottle
from mirrord.fetch.wire import (
    Done,
    Fail,
    Grant,
    Hello,
    Job,
    Limit,
    Log,
    Message,
    Outbox,
    PathSeen,
    Ready,
    decode,
    error_to_wire,
)
from mirrord.storage.store import ContentStore

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the daemon died before prctl took effect
        os._exit(1)


LOG_LEVELS = ("debug", "info", "warning", "error")


class WireLog:
    """The worker's EventLog: each event at or above ``level`` goes to the daemon."""

    def __init__(self, send: Callable[[Message], None], level: str) -> None:
        self._send = send
        self._lowest = LOG_LEVELS.index(level)

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LOG_LEVELS.index(level) >= self._lowest:
            plain = {k: v if _is_json_scalar(v) else str(v) for k, v in fields.items()}
            self._send(Log(level, event, plain))

    def debug(self, event: str, **fields: Any) -> None:
        self._write("debug", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._write("error", event, {**fields, "exception": traceback.format_exc()})


def _is_json_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


class Worker:
    def __init__(
        self,
        origin: DownloadClient,
        store: ContentStore,
        config: FetchConfig,
        send: Callable[[Message], None],
        throttle: GrantedThrottle,
        log: EventLog,
    ) -> None:
        self._origin = origin
        self._store = store
        self._config = config
        self._send = send
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
        # The reply carries the bytes not yet reported: the daemon's rate meter is
        # current when the job ends, without one more message per job.
        except MirrordError as error:
            error_data = error_to_wire(error)
            reply = Fail(job.job_id, error_data, events.recorded(), self._throttle.take_received())
        else:
            reply = Done(job.job_id, stored, events.recorded(), self._throttle.take_received())
        self._send(reply)


def run_on_idle_cpu() -> None:
    """SCHED_IDLE for this thread and every thread it starts from now on (before any).

    Such a thread runs on CPU time no other task wants, and a waking nginx
    worker preempts it at once: with ``nice`` alone, a fetch worker hashing a
    package still delays the web server's wake-ups.
    """
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    hello = decode(await reader.readline())
    if not isinstance(hello, Hello):
        raise WorkerProtocolError(f"expected hello first, got {hello.TAG!r}")
    config = hello.fetch
    outbox = Outbox(writer)
    send = outbox.send
    log = WireLog(send, hello.log_level)
    if config.worker_cpu == "idle":
        try:
            run_on_idle_cpu()
        except OSError as error:  # a sandbox that filters the call: downloads go on as they are
            log.warning("fetch.worker.idle_cpu_refused", error=error.strerror or str(error))

    throttle = GrantedThrottle(send)
    store = ContentStore(Path(hello.storage))
    connections = hello.connections
    async with DownloadClient.open(
        hello.origin,
        config,
        receive_buffer=lambda: throttle.receive_buffer(connections),
        log=log,
        on_path=lambda sample: send(PathSeen(sample)),
    ) as origin:
        worker = Worker(origin, store, config, send, throttle, log)
        send(Ready())  # the daemon routes jobs here only from now on
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
    outbox.flush()
    writer.close()


def main(argv: list[str]) -> int:
    fd, parent = int(argv[1]), int(argv[2])
    die_with_parent(parent)
    cap_arenas()  # its file threads (write, fsync) need no arena each
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    sock = socket.socket(fileno=fd)
    try:
        run_async(serve(sock))
    except (ConnectionError, asyncio.IncompleteReadError):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
