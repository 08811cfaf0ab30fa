"""Error boundaries for the daemon's background work: nothing it runs on the side kills it.

A failed job (scrub, GC, the status report, a reload, the push listener, the
control server, anything spawned later) is logged, counted in
``mirrord_background_failures_total{task}`` and remembered for ``ctl status``;
a long-lived service is started again after a pause. The daemon serves on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.errors import MirrordError
from mirrord.core.metrics import Metrics

RESTART_AFTER = 30.0  # seconds before a failed long-lived service starts again


@dataclass
class Failure:
    task: str
    error: str
    at: float  # unix time


@dataclass
class Supervisor:
    metrics: Metrics
    log: FilteringBoundLogger
    clock: Clock
    failures: dict[str, int] = field(default_factory=dict)
    last: Failure | None = None

    async def guard(self, name: str, work: Awaitable[object]) -> bool:
        """Run ``work``; a failure is logged, counted and remembered. True when it ended well."""
        try:
            await work
        except MirrordError as error:  # expected trouble (a full disk, a lost file): no traceback
            self._note(name, str(error))
            self.log.error("daemon.task.failed", task=name, error=str(error))  # noqa: TRY400
            return False
        except Exception as error:
            self._note(name, f"internal error: {error!r}")
            self.log.exception("daemon.task.failed", task=name)
            return False
        return True

    async def keep_running(
        self,
        name: str,
        service: Callable[[], Awaitable[None]],
        restart_after: float = RESTART_AFTER,
    ) -> None:
        """A service meant to run until cancelled: after a failure, start it again."""
        while True:
            await self.guard(name, service())
            self.log.warning("daemon.task.restarting", task=name, wait=restart_after)
            await self.clock.sleep(restart_after)

    def _note(self, name: str, error: str) -> None:
        self.failures[name] = self.failures.get(name, 0) + 1
        self.last = Failure(name, error, self.clock.time())
        self.metrics.background_failures.labels(task=name).inc()

    def summary(self) -> dict[str, object]:
        """What ``ctl status`` shows under ``background``."""
        last = self.last
        return {
            "failures": dict(sorted(self.failures.items())),
            "last_failure": None
            if last is None
            else {"task": last.task, "error": last.error, "at": last.at},
        }
