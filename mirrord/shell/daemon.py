"""``mirrord run``: the daemon. Every arch on its own timer, an admin socket, metrics, systemd.

Signal handlers only set events. SIGHUP (or ``ctl reload``) re-reads the
configuration: what can change live is applied between downloads, an invalid
file is refused and the old configuration kept. Shutdown is staged: SIGTERM
stops starting syncs and downloads, lets in-flight downloads and any publish
finish within a grace period, then cancels them and closes everything in
order; a second SIGTERM/SIGINT cuts the grace period short (still safe: every
file operation is atomic and recovery runs at the next start). ``ctl drain``
lets the syncs in progress finish completely, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.signing import Keyring
from mirrord.core.aio import first_completed
from mirrord.core.clock import Clock, SystemClock
from mirrord.core.config import Config
from mirrord.core.config.parse import load_config
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import ConfigError, ControlError
from mirrord.core.logoutput import LogOutput
from mirrord.core.metrics import Metrics
from mirrord.publish.recovery import RecoveryReport
from mirrord.shell.cdn_purge import CdnPurger
from mirrord.shell.control.server import ControlServer
from mirrord.shell.downstream import Downstream, applied_by_restart
from mirrord.shell.metrics_http import DaemonCollector, MetricsServer
from mirrord.shell.operations import DaemonControls, Operations, restore_rate_override
from mirrord.shell.sdnotify import Notifier, watchdog, watchdog_interval
from mirrord.shell.supervisor import Supervisor
from mirrord.sync.fleet import FleetMember, open_fleet
from mirrord.sync.health import Health, Served, assess
from mirrord.sync.runtime import Runtime, open_runtime
from mirrord.sync.scheduler import Scheduler
from mirrord.sync.status import Summary, summarize

if TYPE_CHECKING:  # S3 and MQTT are imported only when configured: ~11 MiB of RSS otherwise
    from mirrord.shell.mqtt_announce import MqttAnnouncer
    from mirrord.shell.mqtt_push import MqttPushListener
    from mirrord.sync.bucketmirror import BucketMirror

STALL_LIMIT = 900.0  # syncs that make no progress this long stop the watchdog pings
GC_DISABLED_RECHECK = 3600.0  # storage.gc_interval 0: look again after a reload
REPORT_EVERY = 10.0  # STATUS= for systemd
SUMMARY_EVERY = 600.0  # the summary line in the log

LIVE_KEYS = frozenset(
    {
        "repositories",
        "interval",
        "shutdown_grace",
        "origin.keys",
        "origin.allow_untrusted",
        "publish.grace",
        "publish.max_delete_fraction",
        "publish.keep_snapshots",
        "publish.older_index",
        "fetch.rate_limit",
        "fetch.burst",
        "fetch.schedule",
        "fetch.missing_grace",
        "limits.max_index_bytes",
        "limits.max_package_bytes",
        "storage.gc_interval",
        # read at each releases pass; adding or removing the section wakes the passes
        "releases",
        "releases.branches",
        "releases.arches",
        "releases.files",
        "releases.latest_stable",
        "releases.max_file_bytes",
        "releases.interval",
        "storage.min_free",
    }
)


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the settings that differ."""
    changed: list[str] = []
    for top in fields(Config):
        before, after = getattr(old, top.name), getattr(new, top.name)
        if before == after:
            continue
        if hasattr(before, "__dataclass_fields__") and hasattr(after, "__dataclass_fields__"):
            changed += [
                f"{top.name}.{inner.name}"
                for inner in fields(before)
                if getattr(before, inner.name) != getattr(after, inner.name)
            ]
        else:
            changed.append(top.name)
    return changed


class Daemon:
    def __init__(
        self,
        config: Config,
        log: FilteringBoundLogger,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        crash: CrashPoints | None = None,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
        log_output: LogOutput | None = None,
    ) -> None:
        self._initial_config = config
        self._log_output = log_output
        self.log = log
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.crash = crash or CrashPoints()
        self.notifier = notifier or Notifier(None)
        self.environ = environ or {}
        self.started_at = self.clock.time()
        self.supervisor = Supervisor(self.metrics, log, self.clock)
        self.runtime: Runtime | None = None
        self.scheduler: Scheduler | None = None
        self.operations: Operations | None = None
        self.downstream: Downstream | None = None  # push, announce, purge, bucket
        self.fleet: FleetMember | None = None  # with fleet configured
        self.ready = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.releases_reconfigured = asyncio.Event()
        self.stopping = asyncio.Event()
        self.draining = False
        self.forced_exit = False  # a second stop signal cut the grace period short
        self._force = asyncio.Event()
        self.collections = 0  # garbage collections done on the timer
        self.collected = asyncio.Condition()
        self._last_progress = 0.0
        self._completed_seen = 0
        self._group: asyncio.TaskGroup | None = None

    # The downstream services in force (a reload may replace them).
    @property
    def push(self) -> MqttPushListener | None:
        return self.downstream.push if self.downstream else None

    @property
    def announcer(self) -> MqttAnnouncer | None:
        return self.downstream.announcer if self.downstream else None

    @property
    def purger(self) -> CdnPurger | None:
        return self.downstream.purger if self.downstream else None

    @property
    def bucket_mirror(self) -> BucketMirror | None:
        return self.downstream.bucket_mirror if self.downstream else None

    @property
    def bucket_opened(self) -> asyncio.Event:
        assert self.downstream is not None, "the daemon is not running"
        return self.downstream.bucket_opened

    @property
    def config(self) -> Config:
        """The configuration in force (the runtime owns it once running)."""
        return self.runtime.config if self.runtime is not None else self._initial_config

    async def health(self) -> Health:
        """``GET /health``: may a balancer send this node traffic? (``mirrord.sync.health``)

        Sets the ``mirrord_healthy`` gauge. In fleet mode it reads the fleet from
        etcd (cached for a second, at most a second's wait; unreadable: not judged).
        """
        book = self.runtime.book if self.runtime is not None else None
        served = []
        for key in self.config.arch_keys():
            status = book.arches.get(key) if book is not None else None
            digest = status.published_sha256 if status is not None else None
            mtime = status.published_last_modified if status is not None else None
            served.append(Served(str(key), digest, mtime))
        view = await self.fleet.view() if self.fleet is not None else None
        health = assess(
            served,
            now=self.clock.time(),
            draining=self.draining,
            stopping=self.stopping.is_set(),
            fleet=view,
            fleet_mode=self.fleet is not None,
        )
        self.metrics.healthy.set(1 if health.healthy else 0)
        return health

    # --- signals -----------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stopping.set()

    def drain(self) -> None:
        """Let the syncs in progress finish, start no more, then stop."""
        self.draining = True
        self.stopping.set()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_stop_signal() -> None:
            if self.stopping.is_set():
                self.log.warning("daemon.stop.immediate")
                self._force.set()
                return
            self.log.info("daemon.stop.requested")
            self.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        if self._initial_config.s3 is not None:  # fail at start, not in the bucket's service
            from mirrord.publish.bucket import load_credentials

            load_credentials(self._initial_config.s3, self.environ)
        async with self._open_runtime() as runtime:
            self.runtime = runtime
            config = runtime.config
            scheduler = self.scheduler = Scheduler(
                runtime.engine, runtime.live, runtime.book, clock=self.clock, log=self.log
            )
            downstream = self.downstream = Downstream(
                runtime, scheduler, self.supervisor, environ=self.environ, crash=self.crash
            )
            await downstream.prepare(config)  # subscribed to the feed before the first publish
            controls = DaemonControls(
                started_at=self.started_at,
                reload=self.reload,
                drain=self.drain,
                spawn=self._spawn,
                draining=lambda: self.draining,
                background=self.supervisor.summary,
                log=self._log_state,
                push=lambda: downstream.push.status() if downstream.push else None,
                announce=lambda: downstream.announcer.status() if downstream.announcer else None,
                purge=lambda: downstream.purger.status() if downstream.purger else None,
                bucket=lambda: (
                    downstream.bucket_mirror.status() if downstream.bucket_mirror else None
                ),
                purger=lambda: downstream.purger,
                fleet=lambda: self.fleet.status() if self.fleet is not None else None,
                health=self._health_body,
            )
            self.operations = Operations(runtime, scheduler, controls)
            await runtime.engine.count_store(after_change=False)
            await restore_rate_override(runtime)
            self.metrics.registry.register(
                DaemonCollector(
                    runtime.book,
                    scheduler,
                    lambda: runtime.config.arch_keys(),
                    runtime.traffic.meter.rate,
                    self.clock,
                    trees=lambda: list(runtime.releases.status.values()),
                    bucket=lambda: downstream.bucket_mirror,
                    dropped_log_lines=self._dropped_log_lines,
                )
            )
            control = (
                ControlServer(
                    config.control.socket,
                    self.operations.handle,
                    log=self.log,
                    group=config.control.group,
                    idle_timeout=config.control.idle_timeout,
                )
                if config.control.socket
                else None
            )
            metrics = (
                MetricsServer(
                    config.metrics.listen,
                    self.metrics.registry,
                    self.log,
                    report=self.operations.report,
                    clock=self.clock,
                    health=self.health,
                )
                if config.metrics.listen
                else None
            )
            if metrics is not None:
                await metrics.start()
            if control is not None:
                control.bind()
            try:
                await self._serve(runtime, scheduler, control)
            finally:
                if metrics is not None:
                    await metrics.close()
        self.notifier.status("stopped")
        self.log.info("daemon.stopped", forced=self.forced_exit)

    def _dropped_log_lines(self) -> int:
        return self._log_output.dropped if self._log_output is not None else 0

    def _log_state(self) -> dict[str, object]:
        if self._log_output is None:
            return {"dropped": 0, "trouble": None}
        return self._log_output.state()

    async def _health_body(self) -> dict[str, Any]:
        return (await self.health()).body()

    @contextlib.asynccontextmanager
    async def _open_runtime(self) -> AsyncIterator[Runtime]:
        """The runtime, and with ``fleet`` configured this node's membership around it."""
        async with contextlib.AsyncExitStack() as stack:
            fleet = self._initial_config.fleet
            if fleet is not None:
                self.fleet = await stack.enter_async_context(
                    open_fleet(fleet, clock=self.clock, log=self.log, metrics=self.metrics)
                )
            yield await stack.enter_async_context(
                open_runtime(
                    self._initial_config,
                    log=self.log,
                    clock=self.clock,
                    metrics=self.metrics,
                    crash=self.crash,
                    barrier=self.fleet,
                )
            )

    async def _serve(
        self, runtime: Runtime, scheduler: Scheduler, control: ControlServer | None
    ) -> None:
        config = runtime.config
        async with asyncio.TaskGroup() as group:
            self._group = group
            keep = self.supervisor.keep_running
            services: list[asyncio.Task[None]] = [
                group.create_task(keep("reload", self._reload_loop), name="reload"),
                group.create_task(
                    keep("gc", lambda: self._collect_garbage_periodically(runtime)), name="gc"
                ),
                group.create_task(
                    keep("report", lambda: self._report_periodically(runtime, scheduler)),
                    name="report",
                ),
            ]
            if control is not None:
                services.append(group.create_task(keep("control", control.serve), name="control"))
            if self.fleet is not None:  # adding or removing the section needs a restart
                services.append(group.create_task(keep("fleet", self.fleet.run), name="fleet"))
            # Always running, idle while there is no releases section: a reload may add one.
            trees = keep("releases", lambda: self._sync_releases_periodically(runtime))
            services.append(group.create_task(trees, name="releases"))
            downstream = self.downstream
            assert downstream is not None
            downstream.start(group)
            interval = watchdog_interval(self.environ)
            if interval is not None and self.notifier.enabled:
                services.append(
                    group.create_task(watchdog(self.notifier, interval, self.clock, self._healthy))
                )
            syncs = group.create_task(scheduler.run(), name="scheduler")
            self.notifier.ready(f"started: {len(config.arch_keys())} arches")
            self.ready.set()
            self.log.info(
                "daemon.ready",
                arches=len(config.arch_keys()),
                interval=config.interval,
                recovered=_recovery_summary(runtime.recovery),
            )
            await self._stop_when_asked(runtime, scheduler, syncs, group)
            downstream.cancel()
            for service in services:
                service.cancel()
        self._group = None

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        """Background work with an error boundary: a failure is logged, counted, shown in
        ``ctl status``, and the daemon serves on."""
        assert self._group is not None
        self._group.create_task(self.supervisor.guard(name, work), name=name)

    async def _stop_when_asked(
        self,
        runtime: Runtime,
        scheduler: Scheduler,
        syncs: asyncio.Task[None],
        group: asyncio.TaskGroup,
    ) -> None:
        """Staged: start no sync, let running ones finish (within the grace), then cancel."""
        await self.stopping.wait()
        self.notifier.stopping()
        self.log.info("daemon.stopping", draining=self.draining, syncing=len(scheduler.syncing))
        scheduler.stop()
        if not self.draining:
            runtime.fetcher.stop_taking_work()
        grace = None if self.draining else self.config.shutdown_grace
        forced = group.create_task(self._force.wait(), name="force-exit")
        done, _ = await asyncio.wait(
            {syncs, forced}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
        )
        forced.cancel()
        if syncs in done:
            return
        if forced in done:
            self.forced_exit = True
        else:
            self.log.warning("daemon.stop.grace_expired", grace=grace)
        syncs.cancel()
        runtime.fetcher.abort()
        runtime.settlement.spoil("downloads and syncs in flight cancelled")

    def _healthy(self) -> bool:
        """False when a sync has made no progress (no download ended) for STALL_LIMIT."""
        now = self.clock.monotonic()
        fetcher = self.runtime.fetcher if self.runtime is not None else None
        if (
            self.scheduler is None
            or not self.scheduler.syncing
            or (fetcher is not None and fetcher.completed != self._completed_seen)
        ):
            self._completed_seen = fetcher.completed if fetcher is not None else 0
            self._last_progress = now
        return now - self._last_progress < STALL_LIMIT

    # --- background work ----------------------------------------------------------------

    async def _collect_garbage_periodically(self, runtime: Runtime) -> None:
        """Unattended for months, the store must not grow forever."""
        while True:
            interval = runtime.config.storage.gc_interval
            await self.clock.sleep(interval if interval > 0 else GC_DISABLED_RECHECK)
            if runtime.config.storage.gc_interval <= 0:
                continue
            # A broken object must not stop the daemon: counted, and the next run retries.
            await self.supervisor.guard("gc", runtime.engine.collect_garbage())
            async with self.collected:
                self.collections += 1
                self.collected.notify_all()

    async def _sync_releases_periodically(self, runtime: Runtime) -> None:
        """The releases trees, beside the package syncs: their downloads never gate a publish."""
        mirror = runtime.releases
        while not self.stopping.is_set():
            self.releases_reconfigured.clear()
            releases = runtime.config.releases
            if releases is None:  # not mirrored (now): the published trees stay as they are
                await self.releases_reconfigured.wait()
                continue
            result = await mirror.run_pass(mirror.take_asked())
            self.log.info(
                "releases.pass.done",
                directories=len(result.outcomes),
                failed=sum(1 for o in result.outcomes if not o.ok),
                latest_stable=result.latest_stable,
            )
            # The next pass after the interval, at once when an operator asks (ctl sync),
            # or when a reload adds or removes the section.
            await first_completed(
                self.clock.sleep(releases.interval),
                mirror.asked(),
                self.releases_reconfigured.wait(),
            )

    async def _report_periodically(self, runtime: Runtime, scheduler: Scheduler) -> None:
        """STATUS= for systemd, the store's size, and a summary line for people.

        The summary is logged once every arch has synced after start-up, then
        every SUMMARY_EVERY seconds: unchanged arches log only at debug level.
        Nothing here runs per sync: with hundreds of arches that would cost a
        summary of every arch after each one.
        """

        def status_now() -> Summary:
            return summarize(
                runtime.book,
                runtime.config.arch_keys(),
                syncing=set(scheduler.syncing),
                held=scheduler.held,
                now=self.clock.time(),
            )

        status_text = ""

        def tell_systemd(summary: Summary) -> None:
            nonlocal status_text
            if summary.text() != status_text:
                status_text = summary.text()
                self.notifier.status(status_text[:200])

        def caught_up() -> bool:  # checked after each sync: stops at the first arch not done
            book = runtime.book
            return all(book[k].runs or k in scheduler.held for k in runtime.config.arch_keys())

        await first_completed(
            scheduler.wait_until(caught_up),
            self._report_until_caught_up(tell_systemd, status_now),
        )
        next_summary = float("-inf")
        while True:
            summary = status_now()
            tell_systemd(summary)
            now = self.clock.monotonic()
            if now >= next_summary:
                await runtime.engine.count_store()
                self.log.info("sync.summary", **summary.fields())
                next_summary = now + SUMMARY_EVERY
            await self.clock.sleep(REPORT_EVERY)

    async def _report_until_caught_up(
        self, tell_systemd: Callable[[Summary], None], status_now: Callable[[], Summary]
    ) -> None:
        """STATUS= during the first syncs after start-up (a first sync can take hours)."""
        while True:
            tell_systemd(status_now())
            await self.clock.sleep(REPORT_EVERY)

    # --- reload ------------------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            with contextlib.suppress(ControlError):  # logged; the old configuration stays
                await self.reload()

    async def reload(self) -> dict[str, Any]:
        if self.config_path is None or self.runtime is None or self.scheduler is None:
            raise ControlError("unsupported", "this daemon was not started from a config file")
        runtime = self.runtime
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            keyring = await asyncio.to_thread(
                Keyring.load, new.origin.keys, required=not new.origin.allow_untrusted
            )
            if self.downstream is not None:
                await self.downstream.check(new)
        except ConfigError as error:
            self.log.error(  # noqa: TRY400 - an expected refusal, not a crash: no traceback
                "config.reload.refused", error=str(error), path=str(self.config_path)
            )
            self.notifier.ready("reload refused: old configuration kept")
            raise ControlError(
                "bad_config", f"reload refused, old configuration kept: {error}"
            ) from None
        old = runtime.config
        changed = changed_keys(old, new)
        live = [k for k in changed if k in LIVE_KEYS or applied_by_restart(k)]
        restart = [k for k in changed if k not in live]
        added = [k for k in new.arch_keys() if k not in old.arch_keys()]
        for key in added:
            await runtime.adopt_arch(key, new)
        runtime.live.replace(new, keyring)
        runtime.traffic.reconfigure(new.fetch)
        self.scheduler.reconfigure()
        if (old.releases is None) != (new.releases is None):
            self.releases_reconfigured.set()
        restarted: list[str] = []
        if self.downstream is not None and self._group is not None:
            restarted = await self.downstream.reload(old, new, self._group)
        self.log.info(
            "config.reload.done",
            applied=live,
            needs_restart=restart,
            added=[str(k) for k in added],
            restarted=restarted,
        )
        self.notifier.ready(f"reloaded: {len(new.arch_keys())} arches")
        return {"applied": live, "needs_restart": restart, "restarted": restarted}


def _recovery_summary(report: RecoveryReport) -> dict[str, int]:
    return {k: v for k, v in vars(report).items() if v}
