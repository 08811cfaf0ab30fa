"""What the daemon knows about each arch, and the metrics that mirror it.

``StatusBook`` is the one owner of per-arch facts (origin and published
Last-Modified, since when the origin is ahead, last outcome, what the
scheduler is doing with the arch). Every change goes through one of its
``note_*`` methods, which keep the Prometheus series in step, so no other
code writes an arch's metrics. Values that only mean something at scrape
time (lag, snapshot age) are computed from these facts when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.publish.generations import goes_back
from mirrord.storage.statedb import Snapshot


class Outcome(StrEnum):
    PUBLISHED = "published"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    REFUSED = "refused"  # the mass-deletion guard: an operator must decide
    INTERRUPTED = "interrupted"  # the daemon is stopping: not the arch's fault


class Phase(StrEnum):
    """What the scheduler is doing with an arch right now."""

    IDLE = "idle"  # waiting for its next poll
    SYNCING = "syncing"
    HELD = "held"  # an operator rolled it back: polled for lag, never published
    PAUSED = "paused"  # the whole daemon is paused: polled for lag only


@dataclass(frozen=True)
class ArchResult:
    key: ArchKey
    outcome: Outcome
    packages: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0
    snapshot_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.PUBLISHED, Outcome.UNCHANGED)


@dataclass(frozen=True)
class OriginSeen:
    """The origin's index at our last look: validators for the next conditional poll."""

    etag: str | None
    last_modified: str | None
    sha256: str
    mtime: float | None = None  # last_modified as a timestamp


@dataclass
class FetchProgress:
    """One sync's downloads: planned once the engine knows what it lacks, done as each lands."""

    started: float  # monotonic
    planned_files: int
    planned_bytes: int
    done_files: int = 0
    done_bytes: int = 0
    failed_files: int = 0

    def rate(self, now: float) -> float | None:
        """Bytes per second since the downloads began (None in the first second: noise)."""
        elapsed = now - self.started
        return self.done_bytes / elapsed if elapsed >= 1.0 else None

    def eta(self, now: float) -> float | None:
        """Seconds until the planned bytes are in, at the rate so far."""
        rate = self.rate(now)
        if not rate:
            return None
        return max(0, self.planned_bytes - self.done_bytes) / rate


@dataclass
class ArchStatus:
    key: ArchKey
    phase: Phase = Phase.IDLE
    last_result: ArchResult | None = None
    origin_last_modified: float | None = None
    published_last_modified: float | None = None
    published_at: float | None = None  # when our current snapshot went live
    published_sha256: str | None = None  # the index bytes we serve
    behind_since: float | None = None  # when the origin first had what we have not published
    origin_seen: OriginSeen | None = None
    last_poll: float | None = None
    next_poll: float | None = None  # wall time, for people
    last_success: float | None = None
    last_error: str | None = None
    runs: int = 0  # syncs ended, either way
    retries: int = 0  # download attempts retried during the current (or last) sync
    rerun_queued: bool = False
    index_stat: tuple[int, int] | None = None  # (size, mtime_ns) of our published index
    relink: bool = False  # the tree may be damaged: link every file again at the next publish
    progress: FetchProgress | None = None  # the downloads of the sync in progress

    @property
    def failing(self) -> bool:
        last = self.last_result
        return last is not None and last.outcome in (Outcome.FAILED, Outcome.REFUSED)

    def lag(self, now: float) -> float:
        return max(0.0, now - self.behind_since) if self.behind_since is not None else 0.0


@dataclass
class StatusBook:
    metrics: Metrics
    arches: dict[ArchKey, ArchStatus] = field(default_factory=dict)
    store_objects: int = 0
    store_bytes: int = 0

    def __getitem__(self, key: ArchKey) -> ArchStatus:
        status = self.arches.get(key)
        if status is None:
            status = self.arches[key] = ArchStatus(key)
        return status

    def forget_others(self, keys: list[ArchKey]) -> None:
        """Drop arches no longer configured (after a reload)."""
        for key in set(self.arches) - set(keys):
            del self.arches[key]

    def still_to_download(self, but: ArchKey) -> int:
        """Bytes the syncs in progress (other than ``but``) have planned and not stored yet."""
        return sum(
            max(0, p.planned_bytes - p.done_bytes)
            for key, status in self.arches.items()
            if key != but and (p := status.progress) is not None
        )

    def note_retry(self, key: ArchKey) -> None:
        status = self.arches.get(key)
        if status is not None:
            status.retries += 1

    def note_downloads_planned(self, key: ArchKey, files: int, size: int, now: float) -> None:
        """``now`` is monotonic: progress measures elapsed time, not wall time."""
        self[key].progress = FetchProgress(now, planned_files=files, planned_bytes=size)

    def note_download_done(self, key: ArchKey, size: int) -> None:
        progress = self[key].progress
        if progress is not None:
            progress.done_files += 1
            progress.done_bytes += size

    def note_download_failed(self, key: ArchKey) -> None:
        progress = self[key].progress
        if progress is not None:
            progress.failed_files += 1

    def note_poll(self, key: ArchKey, result: str, now: float) -> None:
        """result: modified, not_modified or failed."""
        self[key].last_poll = now
        self.metrics.index_polls.labels(**Metrics.labels(key), result=result).inc()

    def note_origin(self, key: ArchKey, seen: OriginSeen, now: float) -> None:
        """The origin serves ``seen``: if we do not publish those bytes, we are behind."""
        status = self[key]
        status.origin_seen = seen
        if seen.mtime is not None:
            status.origin_last_modified = seen.mtime
            self.metrics.origin_last_modified.labels(**Metrics.labels(key)).set(seen.mtime)
        self._compare(status, now)

    @staticmethod
    def _compare(status: ArchStatus, now: float) -> None:
        """Behind since the origin first had an index we do not publish."""
        seen = status.origin_seen
        if (
            seen is None
            or seen.sha256 == status.published_sha256
            # an older index than ours (refused unless forced): we are not behind it
            or goes_back(seen.mtime, status.published_last_modified, status.published_at)
        ):
            status.behind_since = None
        elif status.behind_since is None:
            # An origin clock ahead of ours must not hide the lag.
            since = status.origin_last_modified
            status.behind_since = min(since, now) if since is not None else now

    def note_published(
        self,
        key: ArchKey,
        snapshot: Snapshot,
        published_at: float,
        index_stat: tuple[int, int] | None,
    ) -> None:
        labels = Metrics.labels(key)
        status = self[key]
        status.published_last_modified = snapshot.last_modified
        status.published_at = published_at
        status.published_sha256 = snapshot.index_sha256
        status.index_stat = index_stat
        status.relink = False
        if snapshot.last_modified is not None:
            self.metrics.published_last_modified.labels(**labels).set(snapshot.last_modified)
            if (
                status.origin_last_modified is None
                or status.origin_last_modified <= snapshot.last_modified
            ):
                status.origin_last_modified = snapshot.last_modified
                self.metrics.origin_last_modified.labels(**labels).set(snapshot.last_modified)
        self._compare(status, published_at)
        self.metrics.published_packages.labels(**labels).set(snapshot.packages)
        self.metrics.published_bytes.labels(**labels).set(snapshot.bytes)

    def note_result(self, result: ArchResult, now: float) -> None:
        labels = Metrics.labels(result.key)
        status = self[result.key]
        status.last_result = result
        status.progress = None
        status.runs += 1
        if result.ok:
            status.last_success = now
            status.last_error = None
            self.metrics.last_success.labels(**labels).set(now)
        elif result.outcome is not Outcome.INTERRUPTED:
            status.last_error = result.error
            if result.outcome is Outcome.REFUSED:
                self.metrics.publishes.labels(**labels, outcome="refused").inc()
        if result.outcome is not Outcome.INTERRUPTED:
            self.metrics.arch_failing.labels(**labels).set(0 if result.ok else 1)

    def note_store(self, objects: int, stored_bytes: int) -> None:
        self.store_objects, self.store_bytes = objects, stored_bytes


@dataclass(frozen=True)
class Summary:
    """The whole mirror at a glance, for the log and systemd's STATUS=."""

    arches: int
    current: int
    behind: int
    syncing: int
    failing: int
    held: int
    never_synced: int
    worst_lag: float
    worst_arch: str | None
    first_failure: str | None

    def fields(self) -> dict[str, object]:
        return {
            "arches": self.arches,
            "current": self.current,
            "behind": self.behind,
            "syncing": self.syncing,
            "failing": self.failing,
            "held": self.held,
            "worst_lag": round(self.worst_lag, 1),
            "worst_arch": self.worst_arch,
        }

    def text(self) -> str:
        text = f"{self.current}/{self.arches} arches current"
        if self.syncing:
            text += f", {self.syncing} syncing"
        if self.behind:
            text += f", {self.behind} behind (worst {self.worst_arch}: {self.worst_lag:.0f}s)"
        if self.held:
            text += f", {self.held} held"
        if self.failing:
            text += f", {self.failing} failing ({self.first_failure})"
        return text


def summarize(
    book: StatusBook,
    keys: list[ArchKey],
    *,
    syncing: set[ArchKey],
    held: set[ArchKey],
    now: float,
) -> Summary:
    behind = [k for k in keys if book[k].behind_since is not None]
    failing = [k for k in keys if book[k].failing]
    worst = max(behind, key=lambda k: book[k].lag(now), default=None)
    first_failure = None
    if failing:
        first_failure = f"{failing[0]}: {book[failing[0]].last_error}"
    return Summary(
        arches=len(keys),
        current=len(keys) - len(behind),
        behind=len(behind),
        syncing=len([k for k in keys if k in syncing]),
        failing=len(failing),
        held=len([k for k in keys if k in held]),
        never_synced=len([k for k in keys if book[k].runs == 0 and k not in held]),
        worst_lag=book[worst].lag(now) if worst is not None else 0.0,
        worst_arch=str(worst) if worst is not None else None,
        first_failure=first_failure,
    )
