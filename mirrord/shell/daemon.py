"""``mirrord run``: the daemon. Passes on a timer, an admin socket, metrics, systemd.

Signal handlers only set events. SIGHUP (or ``ctl reload``) re-reads the
configuration: what can change live is applied between downloads, an invalid
file is refused and the old configuration kept. Shutdown is staged: SIGTERM
stops starting passes and downloads, lets in-flight downloads and any publish
finish within a grace period, then cancels; a second SIGTERM/SIGINT cancels at
once (still safe: every file operation is atomic and recovery runs at the next
start). ``ctl drain`` lets the current pass finish completely, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.signing import Keyring
from mirrord.core.aio import first_completed
from mirrord.core.clock import Clock, SystemClock
from mirrord.core.config import Config, load_config
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import ConfigError, ControlError
from mirrord.core.metrics import Metrics
from mirrord.publish.recovery import RecoveryReport, recover_arch
from mirrord.shell.control.server import ControlServer
from mirrord.shell.metrics_http import DaemonCollector, MetricsServer, ScrapeState
from mirrord.shell.operations import DaemonState, Operations
from mirrord.shell.sdnotify import Notifier, watchdog, watchdog_interval
from mirrord.storage.maintenance import collect_garbage
from mirrord.sync.engine import ArchResult
from mirrord.sync.runtime import Runtime, open_runtime

STALL_LIMIT = 900.0  # a pass that makes no progress this long stops the watchdog pings

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
        "fetch.rate_limit",
        "fetch.burst",
        "fetch.schedule",
        "limits.max_index_bytes",
        "limits.max_package_bytes",
        "storage.gc_interval",
    }
)


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the settings that differ."""
    changed: list[str] = []
    for top in fields(Config):
        before, after = getattr(old, top.name), getattr(new, top.name)
        if before == after:
            continue
        if hasattr(before, "__dataclass_fields__"):
            changed += [
                f"{top.name}.{inner.name}"
                for inner in fields(before)
                if getattr(before, inner.name) != getattr(after, inner.name)
            ]
        else:
            changed.append(top.name)
    return changed


@dataclass
class Daemon:
    config: Config
    log: FilteringBoundLogger
    config_path: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    crash: CrashPoints = field(default_factory=CrashPoints)
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    environ: Mapping[str, str] = field(default_factory=dict)
    state: DaemonState = field(default_factory=DaemonState)
    scrape: ScrapeState = field(default_factory=ScrapeState)
    runtime: Runtime | None = None
    operations: Operations | None = None
    reload_requested: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_progress: float = 0.0
    _last_gc: float = 0.0
    _completed_seen: int = 0
    _group: asyncio.TaskGroup | None = None

    # --- signals -----------------------------------------------------------------------

    def request_stop(self) -> None:
        self.state.request_stop()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_stop_signal() -> None:
            if self.state.stopping.is_set():
                self.log.warning("daemon.stop.immediate")
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                return
            self.log.info("daemon.stop.requested")
            self.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        config = self.config
        async with open_runtime(
            config, log=self.log, clock=self.clock, metrics=self.metrics, crash=self.crash
        ) as runtime:
            self.runtime = runtime
            self._last_gc = self.clock.monotonic()  # the first collection a gc_interval from now
            self.operations = Operations(self.state, runtime, reload=self.reload, spawn=self._spawn)
            self.scrape.measured_rate = runtime.traffic.meter.rate
            self.metrics.registry.register(DaemonCollector(self.scrape, self.clock))
            await self._refresh_scrape(runtime)
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
                MetricsServer(config.metrics.listen, self.metrics.registry, self.log)
                if config.metrics.listen
                else None
            )
            if metrics is not None:
                await metrics.start()
            if control is not None:
                control.bind()
            try:
                await self._serve(runtime, control)
            finally:
                if metrics is not None:
                    await metrics.close()
        self.notifier.status("stopped")
        self.log.info("daemon.stopped", passes=self.state.passes)

    async def _serve(self, runtime: Runtime, control: ControlServer | None) -> None:
        config = self.config
        async with asyncio.TaskGroup() as group:
            self._group = group
            services: list[asyncio.Task[None]] = [group.create_task(self._reload_loop())]
            if control is not None:
                services.append(group.create_task(control.serve()))
            interval = watchdog_interval(self.environ)
            if interval is not None and self.notifier.enabled:
                services.append(
                    group.create_task(watchdog(self.notifier, interval, self.clock, self._healthy))
                )
            passes = group.create_task(self._pass_loop(runtime), name="pass-loop")
            self.notifier.ready(f"started: {len(config.arch_keys())} arches")
            self.ready.set()
            self.log.info(
                "daemon.ready",
                arches=len(config.arch_keys()),
                interval=config.interval,
                recovered=_recovery_summary(runtime.recovery),
            )
            await self._stop_when_asked(runtime, passes)
            for service in services:
                service.cancel()

    def _spawn(self, work: Awaitable[None]) -> None:
        assert self._group is not None

        async def run() -> None:
            await work

        self._group.create_task(run())

    async def _stop_when_asked(self, runtime: Runtime, passes: asyncio.Task[None]) -> None:
        await self.state.stopping.wait()
        self.notifier.stopping()
        self.log.info("daemon.stopping", draining=self.state.draining)
        if not self.state.draining:
            runtime.fetcher.stop_taking_work()
        if passes.done():
            return
        grace = self.config.shutdown_grace
        try:
            async with asyncio.timeout(None if self.state.draining else grace):
                await asyncio.shield(passes)
        except TimeoutError:
            self.log.warning("daemon.stop.grace_expired", grace=grace)
            passes.cancel()
            runtime.fetcher.abort()

    def _healthy(self) -> bool:
        """False when a pass has made no progress (no download ended) for STALL_LIMIT."""
        if self.runtime is not None and self.runtime.fetcher.completed != self._completed_seen:
            self._completed_seen = self.runtime.fetcher.completed
            self.last_progress = self.clock.monotonic()
        return (
            not self.state.pass_running or self.clock.monotonic() - self.last_progress < STALL_LIMIT
        )

    # --- passes ------------------------------------------------------------------------

    async def _pass_loop(self, runtime: Runtime) -> None:
        state = self.state
        while not state.stopping.is_set():
            state.wake.clear()
            if state.draining:  # nothing running: stop now
                state.request_stop()
                return
            if state.paused:
                self.notifier.status("paused")
                await state.wake.wait()
                continue
            configured = self.config.arch_keys()
            wanted = set(state.requested) or set(configured)
            keys = [k for k in configured if k in wanted and k not in state.held]
            state.requested.clear()
            force = frozenset(state.force_next & set(keys))
            state.force_next -= force
            await self._one_pass(runtime, keys, force)  # may be empty: every arch held
            if state.draining:
                state.request_stop()
                return
            if state.stopping.is_set():
                return
            await first_completed(self.clock.sleep(self.config.interval), state.wake.wait())

    async def _one_pass(self, runtime: Runtime, keys: list[Any], force: frozenset[Any]) -> None:
        state = self.state
        async with state.pass_lock:
            state.pass_running = True
            state.last_pass_started = self.clock.time()
            self.last_progress = self.clock.monotonic()
            started = self.clock.monotonic()
            self.notifier.status(f"syncing {len(keys)} arches")
            try:
                results = await runtime.engine.run_pass(keys, force)
            finally:
                state.pass_running = False
            state.last_pass_seconds = self.clock.monotonic() - started
        await self._collect_garbage_if_due(runtime)
        await self._refresh_scrape(runtime)
        self._report_pass(results, state.last_pass_seconds)
        async with state.pass_finished:
            state.passes += 1
            state.pass_finished.notify_all()

    async def _collect_garbage_if_due(self, runtime: Runtime) -> None:
        """Unattended for months, the store must not grow forever."""
        interval = self.config.storage.gc_interval
        now = self.clock.monotonic()
        if interval <= 0 or now - self._last_gc < interval:
            return
        self._last_gc = now
        async with self.state.pass_lock:
            await collect_garbage(
                runtime.store,
                runtime.db,
                clock=self.clock,
                grace=self.config.publish.grace,
                log=self.log,
            )

    def _report_pass(self, results: list[ArchResult], seconds: float) -> None:
        failed = [r for r in results if not r.ok]
        published = sum(1 for r in results if r.outcome == "published")
        self.log.info(
            "sync.pass.done",
            arches=len(results),
            published=published,
            failed=len(failed),
            seconds=round(seconds, 3),
        )
        status = f"{len(results) - len(failed)}/{len(results)} arches current"
        if failed:
            status += f", {len(failed)} failing ({failed[0].key}: {failed[0].error})"
        self.notifier.status(status[:200])

    async def _refresh_scrape(self, runtime: Runtime) -> None:
        scrape = self.scrape
        for key in self.config.arch_keys():
            scrape.lag_since[key] = runtime.engine.state(key).behind_since
            current = await runtime.db.call(runtime.db.current, str(key))
            if current is not None:
                scrape.published_at[key] = current[1]
        scrape.store_objects, scrape.store_bytes = await runtime.db.call(runtime.db.object_stats)
        scrape.paused = self.state.paused
        scrape.held = set(self.state.held)

    # --- reload ------------------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            with contextlib.suppress(ControlError):  # logged; the old configuration stays
                await self.reload()

    async def reload(self) -> dict[str, Any]:
        if self.config_path is None or self.runtime is None:
            raise ControlError("unsupported", "this daemon was not started from a config file")
        runtime = self.runtime
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            keyring = await asyncio.to_thread(
                Keyring.load, new.origin.keys, required=not new.origin.allow_untrusted
            )
        except ConfigError as error:
            self.log.error(  # noqa: TRY400 - an expected refusal, not a crash: no traceback
                "config.reload.refused", error=str(error), path=str(self.config_path)
            )
            self.notifier.ready("reload refused: old configuration kept")
            raise ControlError(
                "bad_config", f"reload refused, old configuration kept: {error}"
            ) from None
        changed = changed_keys(self.config, new)
        live = [k for k in changed if k in LIVE_KEYS]
        restart = [k for k in changed if k not in LIVE_KEYS]
        engine = runtime.engine
        added = [k for k in new.arch_keys() if k not in self.config.arch_keys()]
        for key in added:
            await recover_arch(
                key,
                db=runtime.db,
                publisher=runtime.publisher,
                clock=self.clock,
                log=self.log,
                report=RecoveryReport(),
                max_index_bytes=new.limits.max_index_bytes,
                max_package_bytes=new.limits.max_package_bytes,
            )
        engine.config = new
        engine.keyring = keyring
        runtime.traffic.reconfigure(new.fetch)
        self.config = new
        self.state.wake.set()
        self.log.info(
            "config.reload.done", applied=live, needs_restart=restart, added=[str(k) for k in added]
        )
        self.notifier.ready(f"reloaded: {len(new.arch_keys())} arches")
        return {"applied": live, "needs_restart": restart}


def _recovery_summary(report: RecoveryReport) -> dict[str, int]:
    return {k: v for k, v in vars(report).items() if v}
