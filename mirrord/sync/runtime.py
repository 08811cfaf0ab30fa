"""Assemble a running mirrord: lock, store, database, recovery, origin, workers.

``open_runtime`` is the one place that opens resources (in dependency order,
on one AsyncExitStack) and starts the long-lived tasks (download workers,
the committer), all inside one TaskGroup. Leaving it stops taking new
downloads, lets in-flight ones finish, and closes everything in reverse order.
The live configuration has one owner, ``LiveConfig``: a reload replaces it
there and every reader sees the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.signing import Keyring
from mirrord.core.clock import Clock, SystemClock
from mirrord.core.config import Config
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import StoreError
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.fetch.download import PackageDownloader
from mirrord.fetch.events import MetricsEvents
from mirrord.fetch.fetcher import Fetcher
from mirrord.fetch.filedownload import FileDownloader
from mirrord.fetch.loopload import LoopLoad
from mirrord.fetch.origin import OriginClient
from mirrord.fetch.traffic import TrafficControl
from mirrord.fetch.workerpool import (
    AdaptiveDownloader,
    ProcessDownloader,
    download_connections,
    judges_load,
    start_at_once,
    worker_hello,
)
from mirrord.publish.publisher import Publisher
from mirrord.publish.recovery import RecoveryReport, recover_arch, recover_store
from mirrord.publish.treepublisher import TreePublisher
from mirrord.storage import cleanstop
from mirrord.storage.cleanstop import Settlement
from mirrord.storage.committer import Committer
from mirrord.storage.lock import StorageLock
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore
from mirrord.storage.treehistory import TreeHistory
from mirrord.storage.treestate import TreeState
from mirrord.sync.engine import SyncEngine
from mirrord.sync.feed import PublishFeed
from mirrord.sync.live import LiveConfig
from mirrord.sync.preflight import check_roots, create_roots
from mirrord.sync.publication import Publication, StageBarrier
from mirrord.sync.releases import ReleaseMirror
from mirrord.sync.status import StatusBook


@dataclass
class Runtime:
    """Everything a running mirrord is made of, opened in dependency order."""

    live: LiveConfig
    engine: SyncEngine
    book: StatusBook
    fetcher: Fetcher
    store: ContentStore
    db: StateDB
    publisher: Publisher
    metrics: Metrics
    clock: Clock
    log: FilteringBoundLogger
    recovery: RecoveryReport
    traffic: TrafficControl
    feed: PublishFeed
    releases: ReleaseMirror
    settlement: Settlement  # whether this exit may be a clean stop (see ``cleanstop``)

    @property
    def config(self) -> Config:
        return self.live.config

    async def adopt_arch(self, key: ArchKey, config: Config) -> None:
        """Recover a newly configured arch's tree (after a reload), as at start-up."""
        await recover_arch(
            key,
            db=self.db,
            publisher=self.publisher,
            clock=self.clock,
            log=self.log,
            report=self.recovery,
            max_index_bytes=config.limits.max_index_bytes,
            max_package_bytes=config.limits.max_package_bytes,
        )


def prepare_paths(config: Config) -> None:
    """Check the storage and publish roots (see ``preflight``), then create them."""
    create_roots(check_roots(config))


async def recover_all(
    config: Config,
    store: ContentStore,
    db: StateDB,
    publisher: Publisher,
    clock: Clock,
    log: FilteringBoundLogger,
    *,
    compare_store: bool = True,
    consistent: AbstractSet[str] = frozenset(),
) -> RecoveryReport:
    """Make store, database and tree agree for every configured arch (see ``recovery``).

    After a clean stop: ``compare_store=False`` sweeps the store's temporary
    files but does not list ``objects/`` against the database, and the arches in
    ``consistent`` (their trees were left agreeing with it) are not checked.
    """
    report = RecoveryReport()
    try:
        if compare_store:
            await recover_store(store, db, clock, log, report)
        else:
            report.store_temps = await asyncio.to_thread(store.prepare)
        for key in config.arch_keys():
            if str(key) in consistent:
                continue
            await recover_arch(
                key,
                db=db,
                publisher=publisher,
                clock=clock,
                log=log,
                report=report,
                max_index_bytes=config.limits.max_index_bytes,
                max_package_bytes=config.limits.max_package_bytes,
            )
    except OSError as error:
        raise StoreError(
            str(error.filename or config.storage.path), f"recovery failed: {error.strerror}"
        ) from None
    return report


@asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    log: FilteringBoundLogger,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    crash: CrashPoints | None = None,
    barrier: StageBarrier | None = None,
    targets: Collection[ArchKey] | None = None,
) -> AsyncIterator[Runtime]:
    """Open everything, run the long-lived tasks, and close it all in reverse order.

    Leaving stops taking new downloads and lets in-flight ones finish. ``barrier``:
    fleet mode's wait between staging an index and making it live. ``targets``:
    the arches this run syncs, when not every configured one (``sync --only``):
    only a first sync among them starts the fetch workers as the runtime opens.
    """
    clock = clock or SystemClock()
    metrics = metrics or Metrics()
    crash = crash or CrashPoints()
    live = LiveConfig(
        config, Keyring.load(config.origin.keys, required=not config.origin.allow_untrusted)
    )
    prepare_paths(config)
    async with contextlib.AsyncExitStack() as stack:
        lock = StorageLock.acquire(config.storage.path)
        stack.callback(lock.release)
        database = config.storage.path / "state.db"
        marker = await asyncio.to_thread(cleanstop.take, config.storage.path, database)
        log_marker(log, marker)
        settlement = Settlement()
        stack.push(leave_marker_if_clean(live, settlement, clock, log))
        store = ContentStore(config.storage.path)
        db = StateDB.open(database, check=not marker.trusted)
        stack.callback(db.close)
        publisher = Publisher(config.publish.path, store, crash)
        report = await recover_all(
            config,
            store,
            db,
            publisher,
            clock,
            log,
            compare_store=not marker.trusted,
            consistent=marker.consistent_arches(config.publish.path),
        )
        traffic = TrafficControl(config.fetch, clock=clock, metrics=metrics, log=log)
        pool: ProcessDownloader | None = None
        origin = await stack.enter_async_context(
            OriginClient.open(
                config.origin.url,
                config.fetch,
                receive_buffer=lambda: traffic.receive_buffer(
                    download_connections(config.fetch, pool)
                ),
                log=log,
                on_path=traffic.observe_path,
            )
        )
        committer = Committer(store, db, clock, log, crash, settlement=settlement)
        book = StatusBook(metrics)
        feed = PublishFeed()
        events = MetricsEvents(metrics, on_retry=book.note_retry)
        local = PackageDownloader(
            origin.downloads,
            store,
            config.fetch,
            clock=clock,
            log=log,
            events=events,
            throttle=traffic,
        )
        fetcher = Fetcher(
            local, committer, concurrency=config.fetch.concurrency, log=log, metrics=metrics
        )
        if config.fetch.processes > 0:
            load_judged = judges_load(config.fetch)
            pool = ProcessDownloader(
                config.fetch.processes,
                worker_hello(config),
                traffic=traffic,
                events=events,
                log=log,
            )
            fetcher.downloader = AdaptiveDownloader(
                local,
                pool,
                backlog=lambda: fetcher.queued + fetcher.in_flight,
                threshold=config.fetch.processes_from,
                load=LoopLoad(clock) if load_judged else None,
                busy=config.fetch.processes_busy,
                log=log,
            )
            syncing = config.arch_keys() if targets is None else targets
            first_syncs = await db.call(db.unpublished, [str(k) for k in syncing])
            if start_at_once(config.fetch.processes_from, first_syncs, load_judged):
                pool.start()
        committer.wait_for_more_while(fetcher.downloading)
        engine = SyncEngine(
            live=live,
            origin=origin,
            fetcher=fetcher,
            committer=committer,
            publisher=publisher,
            db=db,
            clock=clock,
            log=log,
            metrics=metrics,
            book=book,
            publication=Publication(
                live=live,
                publisher=publisher,
                db=db,
                clock=clock,
                log=log,
                metrics=metrics,
                book=book,
                crash=crash,
                feed=feed,
                barrier=barrier,
            ),
        )
        runtime = Runtime(
            live,
            engine,
            book,
            fetcher,
            store,
            db,
            publisher,
            metrics,
            clock,
            log,
            report,
            traffic,
            feed,
            ReleaseMirror(
                config=lambda: live.config,
                origin=origin,
                downloader=FileDownloader(
                    origin.downloads,
                    store,
                    config.fetch,
                    clock,
                    log,
                    traffic,
                    yield_to=fetcher.wait_idle,
                ),
                committer=committer,
                trees=TreePublisher(publisher, crash),
                state=TreeState(config.storage.path),
                history=TreeHistory(config.storage.path),
                feed=feed,
                clock=clock,
                log=log,
                metrics=metrics,
            ),
            settlement,
        )
        await runtime.releases.load()
        engine.also_in_use = runtime.releases.in_use
        body_error: BaseException | None = None
        async with asyncio.TaskGroup() as group:
            group.create_task(committer.run(), name="committer")
            if pool is not None:
                group.create_task(pool.run(), name="fetch-processes")
            group.create_task(_workers_then_close(fetcher, committer, pool), name="fetch-workers")
            shaper = group.create_task(traffic.run(), name="traffic-schedule")
            try:
                yield runtime
            except BaseException as error:  # re-raised below, outside the TaskGroup
                body_error = error
                fetcher.abort()  # failed or cancelled: do not wait for downloads in flight
            finally:
                fetcher.stop_taking_work()
                shaper.cancel()
        if body_error is not None:
            raise body_error


def log_marker(log: FilteringBoundLogger, marker: cleanstop.Taken) -> None:
    if marker.trusted:
        log.info(
            "recovery.store.skipped",
            reason="clean stop: the store, state.db and these arches' trees agree",
            arches=len(marker.arches),
            state_check="skipped: state.db is the file the clean stop closed",
        )
    elif marker.present:
        log.warning("recovery.marker.untrusted", problem=marker.problem, store="compared")
    else:
        log.info("recovery.store.compare", reason="no clean-stop marker (crash, kill, first start)")


def leave_marker_if_clean(
    live: LiveConfig, settlement: Settlement, clock: Clock, log: FilteringBoundLogger
) -> Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], bool]:
    """The exit callback that writes the clean-stop marker, once the database is closed."""

    def leave(
        kind: type[BaseException] | None, _error: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        if kind is not None or settlement.broken is not None:
            log.info("daemon.stop.unclean", reason=settlement.broken or (kind and kind.__name__))
            return False
        config = live.config  # after a reload, the arches it adopted too
        arches = [str(key) for key in config.arch_keys()]
        try:
            cleanstop.leave(
                config.storage.path,
                config.storage.path / "state.db",
                config.publish.path,
                arches,
                clock.time(),
            )
        except OSError as error:  # the next start compares everything: slower, not wrong
            log.warning("daemon.stop.marker_failed", error=error.strerror)
        return False

    return leave


async def _workers_then_close(
    fetcher: Fetcher, committer: Committer, pool: ProcessDownloader | None
) -> None:
    try:
        await fetcher.run()
    finally:
        committer.close()
        if pool is not None:
            pool.close()
