"""``mirrord run``: the same pass as ``sync`` every ``interval``, until told to stop.

Signal handlers only set events. Shutdown is staged: stop starting passes and
downloads, let in-flight downloads and any publish finish within a grace
period, then cancel; a second SIGTERM/SIGINT cancels at once (still safe:
every file operation is atomic and recovery runs at the next start).
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from mirrord.aio import first_completed
from mirrord.clock import Clock, SystemClock
from mirrord.config import Config
from mirrord.crashpoints import CrashPoints
from mirrord.metrics import Metrics
from mirrord.model import ArchKey
from mirrord.runtime import Runtime, open_runtime

SHUTDOWN_GRACE = 30.0


@dataclass
class Daemon:
    config: Config
    log: FilteringBoundLogger
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    crash: CrashPoints = field(default_factory=CrashPoints)
    shutdown_grace: float = SHUTDOWN_GRACE
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    passes: int = 0
    requested: set[ArchKey] = field(default_factory=set)
    runtime: Runtime | None = None

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def request_sync(self, keys: set[ArchKey] | None = None) -> None:
        self.requested |= keys if keys is not None else set(self.config.arch_keys())
        self.wake.set()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_stop_signal() -> None:
            if self.stopping.is_set():
                self.log.warning("daemon.stop.immediate")
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                return
            self.log.info("daemon.stop.requested")
            self.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop_signal)

    async def run(self) -> None:
        async with open_runtime(
            self.config, log=self.log, clock=self.clock, metrics=self.metrics, crash=self.crash
        ) as runtime:
            self.runtime = runtime
            self.log.info(
                "daemon.ready", arches=len(self.config.arch_keys()), interval=self.config.interval
            )
            async with asyncio.TaskGroup() as group:
                passes = group.create_task(self._pass_loop(runtime), name="pass-loop")
                group.create_task(self._stop_when_asked(runtime, passes), name="stopper")
        self.log.info("daemon.stopped", passes=self.passes)

    async def _stop_when_asked(self, runtime: Runtime, passes: asyncio.Task[None]) -> None:
        await self.stopping.wait()
        runtime.fetcher.stop_taking_work()
        if passes.done():
            return
        try:
            async with asyncio.timeout(self.shutdown_grace):
                await asyncio.shield(passes)
        except TimeoutError:
            self.log.warning("daemon.stop.grace_expired", grace=self.shutdown_grace)
            passes.cancel()

    async def _pass_loop(self, runtime: Runtime) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            keys = sorted(self.requested) if self.requested else None
            self.requested.clear()
            await runtime.engine.run_pass(keys)
            self.passes += 1
            if self.stopping.is_set():
                return
            await first_completed(self.clock.sleep(self.config.interval), self.wake.wait())
