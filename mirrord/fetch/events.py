"""Where a download reports what happened: the daemon's metrics, or a worker's record.

A download on the daemon's event loop reports straight into Prometheus
(``MetricsEvents``). One in a fetch worker process records its events
(``EventRecorder``); they go back with the job's result as ``JobEvents`` and
are replayed into the daemon's metrics, so a download counts the same
wherever it ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mirrord.core.model import ArchKey

if TYPE_CHECKING:  # worker processes import this module, and need no prometheus_client
    from mirrord.core.metrics import Metrics


class FetchEvents(Protocol):
    def received(self, key: ArchKey, nbytes: int) -> None: ...

    def retried(self, key: ArchKey, reason: str) -> None: ...

    def verify_failed(self, reason: str) -> None: ...


class MetricsEvents:
    """FetchEvents that go into the daemon's Prometheus metrics."""

    def __init__(
        self, metrics: Metrics, on_retry: Callable[[ArchKey], None] = lambda _key: None
    ) -> None:
        self._metrics = metrics
        self._on_retry = on_retry  # the arch's retries, summed up in its sync's log line

    def received(self, key: ArchKey, nbytes: int) -> None:
        self._metrics.arch_outcome(self._metrics.fetched_bytes, key, "received").inc(nbytes)

    def retried(self, key: ArchKey, reason: str) -> None:
        self._metrics.retries.labels(reason=reason).inc()
        self._on_retry(key)

    def verify_failed(self, reason: str) -> None:
        self._metrics.verification_failures.labels(reason=reason).inc()


@dataclass(frozen=True, slots=True)
class JobEvents:
    """What one download in a worker process reported, to be replayed in the daemon."""

    received_bytes: int = 0
    retries: tuple[str, ...] = ()
    verify_failures: tuple[str, ...] = ()

    def replay(self, key: ArchKey, into: FetchEvents) -> None:
        into.received(key, self.received_bytes)
        for reason in self.retries:
            into.retried(key, reason)
        for reason in self.verify_failures:
            into.verify_failed(reason)


class EventRecorder:
    """FetchEvents of one job in a worker process, kept until its result goes back."""

    def __init__(self) -> None:
        self._received_bytes = 0
        self._retries: list[str] = []
        self._verify_failures: list[str] = []

    def received(self, key: ArchKey, nbytes: int) -> None:
        self._received_bytes += nbytes

    def retried(self, key: ArchKey, reason: str) -> None:
        self._retries.append(reason)

    def verify_failed(self, reason: str) -> None:
        self._verify_failures.append(reason)

    def recorded(self) -> JobEvents:
        return JobEvents(self._received_bytes, tuple(self._retries), tuple(self._verify_failures))
