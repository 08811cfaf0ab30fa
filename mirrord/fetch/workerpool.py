"""The daemon's side of the fetch worker processes (see ``mirrord.fetch.worker``).

``ProcessDownloader`` is a Downloader: each job goes to the live worker with
the fewest jobs in flight, and its result (a verified object named under
``objects/``, or a MirrordError) comes back over the socket. Worker events
are replayed into the daemon's metrics; rate-limit tokens are granted from
the daemon's one token bucket, so the limit stays global. A worker that dies
fails its jobs (the arch retries at the next pass) and is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from structlog.typing import FilteringBoundLogger

import mirrord
from mirrord.core.config import Config, FetchConfig
from mirrord.core.errors import (
    InternalError,
    MirrordError,
    ShuttingDownError,
    WorkerProtocolError,
)
from mirrord.core.model import ArchKey, PackageRef
from mirrord.fetch.download import PackageDownloader
from mirrord.fetch.events import JobEvents, MetricsEvents
from mirrord.fetch.grants import grant, worker_limit
from mirrord.fetch.loopload import LoopLoad
from mirrord.fetch.traffic import TrafficControl
from mirrord.fetch.wire import (
    Done,
    Fail,
    Hello,
    Job,
    Log,
    Message,
    Outbox,
    PathSeen,
    Ready,
    Received,
    Want,
    decode,
    error_from_wire,
    error_to_wire,
)
from mirrord.storage.store import StoredObject

RESTART_DELAY = 1.0
POOL_THRESHOLD = 128  # queued downloads that make it worth starting the worker processes
POOL_BUSY = 0.9  # ... while the daemon's loop is this busy (its thread's CPU over wall time)
LIVE_WAIT = 30.0
EXIT_WAIT = 10.0  # seconds a worker has to exit once its socket closed, before SIGKILL


@dataclass
class _Process:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    outbox: Outbox
    pending: dict[int, asyncio.Future[Done | Fail]] = field(default_factory=dict)
    alive: bool = True
    up: bool = False  # it said Ready: imported, its origin client open

    def send(self, message: Message) -> None:
        self.outbox.send(message)

    def close(self) -> None:
        self.outbox.flush()
        self.writer.close()


class AdaptiveDownloader:
    """Small jobs on the daemon's own loop, big backlogs on the worker processes
    while that loop is what holds the downloads back.

    Starting worker processes costs a few hundred milliseconds of imports: an
    incremental pass of a hundred packages is faster without them, and so is a
    big one from an origin whose link, not this loop, sets the pace (see
    ``mirrord.fetch.loopload``). Once the backlog reaches ``threshold`` and the
    loop's last window was at least ``busy`` busy (``load``; None: the backlog
    alone decides), the pool starts, and new jobs go to it as soon as it is up
    (until then they keep running here).
    """

    def __init__(
        self,
        local: PackageDownloader,
        pool: ProcessDownloader,
        backlog: Callable[[], int],
        threshold: int = POOL_THRESHOLD,
        *,
        load: LoopLoad | None = None,
        busy: float = POOL_BUSY,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self.local = local
        self.pool = pool
        self._backlog = backlog
        self._threshold = threshold
        self.load = load
        self._busy = busy
        self._log = log

    async def download(self, key: ArchKey, ref: PackageRef) -> StoredObject:
        if self.pool.ready or self._threshold == 0:  # 0: always the workers
            # The workers carry the downloads: this process's connections would sit
            # idle, each holding its read buffer, through the rest of the sync.
            self.local.keep_idle_connections(False)
            return await self.pool.download(key, ref)
        self.local.keep_idle_connections(True)
        if not self.pool.wanted:
            self._start_if_worth_it()
        return await self.local.download(key, ref)

    def _start_if_worth_it(self) -> None:
        loop_busy = self.load.observe() if self.load is not None else None
        backlog = self._backlog()
        if backlog < self._threshold:
            return
        if self.load is not None and (loop_busy is None or loop_busy < self._busy):
            return
        if self._log is not None:
            self._log.info("fetch.workers.start", backlog=backlog, loop_busy=loop_busy)
        self.pool.start()


def judges_load(fetch: FetchConfig) -> bool:
    """Whether the loop's load decides when the workers start (``processes_busy``).

    Not with ``worker_cpu: idle``: those workers spend only CPU time nothing else
    wants, and what they take off the daemon (Nice=10) is what keeps a web server's
    latency on the same cores while a big sync runs; their start-up and messages
    then cost serving nothing.
    """
    return fetch.processes_busy > 0 and fetch.worker_cpu == "normal"


def start_at_once(threshold: int, first_syncs: int, load_judged: bool) -> bool:
    """Start the workers as the runtime opens, not when the backlog reaches ``threshold``.

    ``threshold`` 0 asks for them always. With the loop's load not judged, an
    arch never published here downloads its whole index, thousands of packages
    for any Alpine arch: starting then lets the workers' imports run while the
    daemon reads its state and fetches and verifies the index. Judged, the load
    is only known once downloads run.
    """
    return threshold == 0 or (not load_judged and first_syncs > 0)


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment, with its own code first on the worker's import path.

    A worker must run the code of the daemon that starts it: ``python -m``
    would otherwise import a ``mirrord`` package from the working directory
    first (another checkout, another version, or worse).
    """
    code = str(Path(mirrord.__file__).resolve().parent.parent)
    path = environ.get("PYTHONPATH")
    return {**environ, "PYTHONPATH": code if not path else f"{code}{os.pathsep}{path}"}


def worker_hello(config: Config) -> Hello:
    """What a fetch worker process needs to know (its share of the connection limits)."""
    return Hello(
        origin=config.origin.url,
        storage=str(config.storage.path),
        log_level=config.log.level,
        fetch=worker_fetch(config.fetch),
        connections=tree_connections(config.fetch),
    )


def worker_fetch(fetch: FetchConfig) -> FetchConfig:
    """One worker's share of the limits on downloads and connections."""
    share = fetch.processes
    return replace(
        fetch,
        concurrency=max(1, -(-fetch.concurrency // share)),
        per_host=max(1, -(-fetch.per_host // share)),
    )


def tree_connections(fetch: FetchConfig) -> int:
    """Download connections the daemon and its workers may hold at once: the daemon's
    close as the workers take over, but both are open while they do. The receive
    buffers of all of them share half the rate limit's burst (the daemon's alone
    share it until the workers are wanted: ``download_connections``)."""
    if not fetch.processes:
        return fetch.connections
    return fetch.connections + fetch.processes * worker_fetch(fetch).connections


def download_connections(fetch: FetchConfig, pool: ProcessDownloader | None) -> int:
    """Connections whose receive buffers share half the burst now: the daemon's own
    until its workers are wanted (most syncs never start them), then the whole tree's.
    The daemon's connections pinned to the larger share are not reused after that
    (``ConnectionPool._fits``); only those with a response in flight overlap the
    workers' first ones."""
    return tree_connections(fetch) if pool is not None and pool.wanted else fetch.connections


class ProcessDownloader:
    def __init__(
        self,
        count: int,
        hello: Hello,
        *,
        traffic: TrafficControl,
        events: MetricsEvents,
        log: FilteringBoundLogger,
    ) -> None:
        self._count = count
        self._hello = hello
        self._traffic = traffic
        self._events = events
        self._log = log
        self._workers: list[_Process] = []
        self._ids = 0
        self._ready = asyncio.Event()
        self._live = asyncio.Event()
        self._stopping = False
        self._wanted = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None

    @property
    def ready(self) -> bool:
        """A worker is up and taking jobs (until then, a few hundred ms of its imports,
        the adaptive downloader keeps the jobs on the daemon's own loop)."""
        return self._live.is_set() and not self._stopping

    def start(self) -> None:
        """Start the worker processes (``run`` waits for this; idempotent)."""
        self._wanted.set()

    @property
    def wanted(self) -> bool:
        """Started, or asked to start: their connections may be open."""
        return self._wanted.is_set()

    async def wait_up(self) -> None:
        """Until a worker has said Ready (or the pool is stopping)."""
        await self._live.wait()

    async def wait_started(self) -> None:
        """Until every worker process has been started (Ready or not), or the pool stops."""
        await self._ready.wait()

    # --- Downloader ---------------------------------------------------------------

    async def download(self, key: ArchKey, ref: PackageRef) -> StoredObject:
        self.start()
        await self._ready.wait()
        live = [w for w in self._workers if w.alive and w.up]
        if not live and not self._stopping:
            # None is up yet, or every worker died (a restart is on its way): wait for
            # one, not forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LIVE_WAIT):
                    await self._live.wait()
            live = [w for w in self._workers if w.alive and w.up]
        if not live:
            raise (
                ShuttingDownError()
                if self._stopping
                else InternalError("no fetch worker is running")
            )
        worker = min(live, key=lambda w: len(w.pending))
        self._ids += 1
        job_id = self._ids
        future: asyncio.Future[Done | Fail] = asyncio.get_running_loop().create_future()
        worker.pending[job_id] = future
        worker.send(Job(job_id, key, ref))
        reply = await future
        reply.events.replay(key, self._events)
        if isinstance(reply, Done):
            return reply.stored
        raise error_from_wire(reply.error)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.alive]

    # --- lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        """Start the workers once wanted and keep them running until ``close``."""
        await self._wanted.wait()
        if self._stopping:
            return
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._traffic.add_listener(self._broadcast_limit)
            for index in range(self._count):
                group.create_task(self._keep_running(index), name=f"fetch-process-{index}")

    def close(self) -> None:
        """Stop: close every socket; the workers exit and their loops end."""
        self._stopping = True
        self._ready.set()
        self._live.set()  # a job waiting for a worker to come up stops waiting
        self._wanted.set()
        self._traffic.remove_listener(self._broadcast_limit)
        for worker in self._workers:
            if worker.alive:
                worker.close()

    async def _keep_running(self, index: int) -> None:
        while not self._stopping:
            worker = await self._start(index)
            await self._serve(worker)
            if not self._stopping:
                self._log.error("fetch.worker.exited", index=index, code=worker.process.returncode)
                await asyncio.sleep(RESTART_DELAY)

    async def _start(self, index: int) -> _Process:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # not the working directory's modules: see worker_environment
                "-m",
                "mirrord.fetch.worker",
                str(child_end.fileno()),
                str(os.getpid()),
                pass_fds=(child_end.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=worker_environment(os.environ),
            )
        finally:
            child_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        worker = _Process(index, process, writer, reader, Outbox(writer))
        worker.send(self._hello)
        self._send_limit(worker)
        if len(self._workers) <= index:
            self._workers.append(worker)
        else:
            self._workers[index] = worker
        if len(self._workers) == self._count:
            self._ready.set()
        if self._stopping:  # closed while this one was being started: it stops too
            worker.close()
        return worker

    async def _reap(self, worker: _Process) -> None:
        """Wait for the process to exit; kill one that does not (stopped, wedged): a stop
        of the daemon must not hang on it."""
        try:
            async with asyncio.timeout(EXIT_WAIT):
                await worker.process.wait()
                return
        except TimeoutError:
            pass
        self._log.warning(
            "fetch.worker.killed",
            index=worker.index,
            reason=f"not exited {EXIT_WAIT:g} s after its socket closed",
        )
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        await worker.process.wait()

    async def _serve(self, worker: _Process) -> None:
        try:
            while line := await worker.reader.readline():
                self._handle(worker, decode(line))
        except (ConnectionError, ValueError) as error:
            self._log.error("fetch.worker.protocol", index=worker.index, error=str(error))
        finally:
            worker.alive = False
            if not any(w.alive and w.up for w in self._workers):
                self._live.clear()
            worker.close()
            with contextlib.suppress(ProcessLookupError):
                if self._stopping is False:
                    worker.process.kill()
            await self._reap(worker)
            failure: MirrordError = (
                ShuttingDownError()
                if self._stopping
                else InternalError("fetch worker process died")
            )
            for job_id, future in worker.pending.items():
                if not future.done():
                    future.set_result(Fail(job_id, error_to_wire(failure), JobEvents()))
            worker.pending.clear()

    def _handle(self, worker: _Process, message: Message) -> None:
        match message:
            case Ready():
                worker.up = True
                self._live.set()
            case Done() | Fail():
                if message.received:
                    self._traffic.meter.add(message.received)
                future = worker.pending.pop(message.job_id, None)
                if future is not None and not future.done():
                    future.set_result(message)
            case Received(nbytes=nbytes):
                self._traffic.meter.add(nbytes)
            case PathSeen(sample=sample):
                self._traffic.observe_path(sample)
            case Want() as want:
                assert self._group is not None
                self._group.create_task(self._grant(worker, want))
            case Log(level=level, event=event, fields=fields):
                write = {
                    "debug": self._log.debug,
                    "info": self._log.info,
                    "warning": self._log.warning,
                    "error": self._log.error,
                }.get(level)
                if write is None:
                    raise WorkerProtocolError(f"no log level {level!r}")
                fields.pop("event", None)  # a field by that name would clash with the event's
                write(event, **{**fields, "worker": worker.process.pid})
            case other:
                raise WorkerProtocolError(f"the daemon takes no {other.TAG!r} message")

    async def _grant(self, worker: _Process, want: Want) -> None:
        answer = await grant(self._traffic.bucket, want)
        if worker.alive:
            worker.send(answer)

    def _send_limit(self, worker: _Process) -> None:
        worker.send(worker_limit(self._traffic.bucket, self._count))

    def _broadcast_limit(self) -> None:
        for worker in self._workers:
            if worker.alive:
                self._send_limit(worker)
