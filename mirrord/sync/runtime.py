"""Assemble a running mirrord: lock, store, database, recovery, origin, workers.

``open_runtime`` is the one place that opens resources and starts the
long-lived tasks (download workers, the committer), all inside one TaskGroup.
Leaving it stops taking new downloads, lets in-flight ones finish, and
closes everything in reverse order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.signing import Keyring
from mirrord.core.clock import Clock, SystemClock
from mirrord.core.config import Config
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import StoreError
from mirrord.core.metrics import Metrics
from mirrord.fetch.download import PackageDownloader
from mirrord.fetch.fetcher import Fetcher, MetricsEvents
from mirrord.fetch.origin import OriginClient
from mirrord.fetch.traffic import TrafficControl
from mirrord.fetch.workerpool import AdaptiveDownloader, ProcessDownloader
from mirrord.publish.publisher import Publisher
from mirrord.publish.recovery import RecoveryReport, recover_arch, recover_store
from mirrord.storage.committer import Committer
from mirrord.storage.lock import StorageLock
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore
from mirrord.sync.engine import SyncEngine
from mirrord.sync.preflight import check_roots, create_roots


@dataclass
class Runtime:
    config: Config
    engine: SyncEngine
    fetcher: Fetcher
    committer: Committer
    store: ContentStore
    db: StateDB
    publisher: Publisher
    metrics: Metrics
    clock: Clock
    log: FilteringBoundLogger
    recovery: RecoveryReport
    traffic: TrafficControl


def prepare_paths(config: Config) -> None:
    """Check the storage and publish roots (see ``preflight``), then create them."""
    create_roots(check_roots(config))


@asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    log: FilteringBoundLogger,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    crash: CrashPoints | None = None,
) -> AsyncIterator[Runtime]:
    clock = clock or SystemClock()
    metrics = metrics or Metrics()
    crash = crash or CrashPoints()
    keyring = Keyring.load(config.origin.keys, required=not config.origin.allow_untrusted)
    prepare_paths(config)
    lock = StorageLock.acquire(config.storage.path)
    try:
        store = ContentStore(config.storage.path)
        db = StateDB.open(config.storage.path / "state.db")
        try:
            publisher = Publisher(config.publish.path, store, crash)
            report = RecoveryReport()
            try:
                await recover_store(store, db, clock, log, report)
                for key in config.arch_keys():
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
            traffic = TrafficControl(config.fetch, clock=clock, metrics=metrics, log=log)
            async with OriginClient.open(
                config.origin.url,
                config.fetch,
                receive_buffer=lambda: traffic.receive_buffer(config.fetch.concurrency),
            ) as origin:
                committer = Committer(store, db, clock, log, crash)
                local = PackageDownloader(
                    origin,
                    store,
                    config.fetch,
                    clock=clock,
                    log=log,
                    events=MetricsEvents(metrics),
                    throttle=traffic,
                )
                downloader: PackageDownloader | AdaptiveDownloader = local
                pool: ProcessDownloader | None = None
                if config.fetch.processes > 0:
                    pool = ProcessDownloader(
                        config.fetch.processes,
                        worker_hello(config),
                        traffic=traffic,
                        events=MetricsEvents(metrics),
                        log=log,
                    )
                    downloader = AdaptiveDownloader(
                        local,
                        pool,
                        backlog=lambda: fetcher.queued + fetcher.in_flight,
                        threshold=config.fetch.processes_from,
                    )
                fetcher = Fetcher(
                    downloader,
                    committer,
                    concurrency=config.fetch.concurrency,
                    log=log,
                    metrics=metrics,
                )
                committer.wait_for_more_while(fetcher.downloading)
                engine = SyncEngine(
                    config=config,
                    keyring=keyring,
                    origin=origin,
                    fetcher=fetcher,
                    committer=committer,
                    publisher=publisher,
                    db=db,
                    clock=clock,
                    log=log,
                    metrics=metrics,
                    crash=crash,
                )
                runtime = Runtime(
                    config,
                    engine,
                    fetcher,
                    committer,
                    store,
                    db,
                    publisher,
                    metrics,
                    clock,
                    log,
                    report,
                    traffic,
                )
                body_error: BaseException | None = None
                async with asyncio.TaskGroup() as group:
                    group.create_task(committer.run(), name="committer")
                    if pool is not None:
                        group.create_task(pool.run(), name="fetch-processes")
                    group.create_task(
                        _workers_then_close(fetcher, committer, pool), name="fetch-workers"
                    )
                    shaper = group.create_task(traffic.run(), name="traffic-schedule")
                    try:
                        yield runtime
                    except BaseException as error:  # re-raised below, outside the TaskGroup
                        body_error = error
                    finally:
                        fetcher.stop_taking_work()
                        shaper.cancel()
                if body_error is not None:
                    raise body_error
        finally:
            db.close()
    finally:
        lock.release()


async def _workers_then_close(
    fetcher: Fetcher, committer: Committer, pool: ProcessDownloader | None
) -> None:
    try:
        await fetcher.run()
    finally:
        committer.close()
        if pool is not None:
            pool.close()


def worker_hello(config: Config) -> dict[str, Any]:
    """What a fetch worker process needs to know (its share of the connection limits)."""
    fetch = config.fetch
    share = fetch.processes
    return {
        "origin": config.origin.url,
        "storage": str(config.storage.path),
        "log_level": config.log.level,
        "log_format": config.log.format,
        "fetch": {
            "concurrency": max(1, -(-fetch.concurrency // share)),
            "per_host": max(1, -(-fetch.per_host // share)),
            "connect_timeout": fetch.connect_timeout,
            "read_timeout": fetch.read_timeout,
            "attempts": fetch.attempts,
            "retry_max_time": fetch.retry_max_time,
        },
    }
