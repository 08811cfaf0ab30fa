"""Where a download reports what happened: the daemon's metrics, or a worker's record.

A download on the daemon's event loop reports straight into Prometheus
(``MetricsEvents``). One in a fetch worker process records its events
(``JobEvents``); they go back with the job's result and are replayed into the
daemon's metrics, so a download counts the same wherever it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey


class FetchEvents(Protocol):
    def received(self, key: ArchKey, nbytes: int) -> None: ...

    def retried(self, reason: str) -> None: ...

    def verify_failed(self, reason: str) -> None: ...


class MetricsEvents:
    """FetchEvents that go into the daemon's Prometheus metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def received(self, key: ArchKey, nbytes: int) -> None:
        labels = self._metrics.labels(key)
        self._metrics.fetched_bytes.labels(**labels, outcome="received").inc(nbytes)

    def retried(self, reason: str) -> None:
        self._metrics.retries.labels(reason=reason).inc()

    def verify_failed(self, reason: str) -> None:
        self._metrics.verification_failures.labels(reason=reason).inc()


@dataclass
class JobEvents:
    """FetchEvents of one job in a worker process, kept to be replayed in the daemon."""

    received_bytes: int = 0
    retries: list[str] = field(default_factory=list)
    verify_failures: list[str] = field(default_factory=list)

    def received(self, key: ArchKey, nbytes: int) -> None:
        self.received_bytes += nbytes

    def retried(self, reason: str) -> None:
        self.retries.append(reason)

    def verify_failed(self, reason: str) -> None:
        self.verify_failures.append(reason)

    def replay(self, key: ArchKey, into: FetchEvents) -> None:
        into.received(key, self.received_bytes)
        for reason in self.retries:
            into.retried(reason)
        for reason in self.verify_failures:
            into.verify_failed(reason)

    def wire(self) -> dict[str, Any]:
        return {"rx": self.received_bytes, "retries": self.retries, "verify": self.verify_failures}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobEvents:
        return cls(
            int(data.get("rx", 0)),
            [str(reason) for reason in data.get("retries", ())],
            [str(reason) for reason in data.get("verify", ())],
        )
