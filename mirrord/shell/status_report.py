"""The daemon's state as one report: ``ctl status``, ``/status.json`` and the status page.

One function builds it, so the control socket, the JSON twin and the page
can never disagree. Its keys are the control protocol's: add keys, never
rename or drop one (``mirrord ctl`` and scripts read them).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypedDict

from mirrord import __version__
from mirrord.core.model import ArchKey
from mirrord.core.units import format_rate
from mirrord.sync.runtime import Runtime
from mirrord.sync.scheduler import Scheduler
from mirrord.sync.status import FetchProgress, Phase


class ArchReport(TypedDict):
    arch: str
    state: str
    snapshot: int | None
    published_at: float | None
    packages: int
    bytes: int
    published_last_modified: float | None
    origin_last_modified: float | None
    lag: float
    behind_since: float | None
    last_poll: float | None
    next_poll: float | None
    rerun_queued: bool
    last_outcome: str | None
    last_error: str | None
    last_success: float | None
    held: bool
    syncs: int


class ProgressReport(TypedDict):
    """The downloads of one sync in progress (absent before the sync knows what it lacks)."""

    arch: str
    planned_files: int
    planned_bytes: int
    done_files: int
    done_bytes: int
    failed_files: int
    rate: float | None  # bytes per second since this sync's downloads began
    eta: float | None  # seconds


class SyncReport(TypedDict):
    syncing: list[str]
    interval: float
    progress: list[ProgressReport]


class RateReport(TypedDict):
    limit: float | None
    limit_text: str
    source: str
    measured: float
    origin_rtt: float | None  # seconds, the newest connection's
    held_back: tuple[float, int] | None  # the most the windows carry, the burst that reaches it


class DownloadsReport(TypedDict):
    in_flight: int
    queued: int


class StoreReport(TypedDict):
    objects: int
    bytes: int


class TreeReport(TypedDict):
    """One releases directory (or top-level file) of the releases trees."""

    directory: str
    outcome: str | None
    error: str | None
    checked_at: float | None
    published_at: float | None
    lag: float
    unverified: int
    pending_removal: int
    held: bool  # rolled back: not published from the origin until released


class TreesReport(TypedDict):
    running: bool
    latest_stable: str | None
    interval: float
    directories: list[TreeReport]


class StatusReport(TypedDict):
    version: str
    pid: int
    uptime: float
    paused: bool
    draining: bool
    sync: SyncReport
    rate: RateReport
    downloads: DownloadsReport
    store: StoreReport
    verify: dict[str, object]
    push: dict[str, Any] | None  # the MQTT push trigger's state, None when not configured
    announce: dict[str, Any] | None  # downstream announcements' state, None when not configured
    purge: dict[str, Any] | None  # the CDN purges' state, None when not configured
    bucket: dict[str, Any] | None  # the S3 bucket's state, None when not configured (or not open)
    fleet: dict[str, Any] | None  # fleet mode's state (sync/fleet.py), None when not configured
    health: dict[str, Any] | None  # what GET /health answers (sync/health.py)
    background: dict[str, object]  # failures of supervised background work (supervisor.py)
    log: dict[str, object]  # log lines dropped, and why the first was (core/logoutput.py)
    tasks: int  # asyncio tasks alive in the daemon (flat over months, or something leaks)
    arches: list[ArchReport]
    trees: TreesReport | None  # the releases trees, None when not configured


def progress_report(key: ArchKey, downloads: FetchProgress, now: float) -> ProgressReport:
    """One sync's downloads as the reply carries them (``now``: monotonic)."""
    return {
        "arch": str(key),
        "planned_files": downloads.planned_files,
        "planned_bytes": downloads.planned_bytes,
        "done_files": downloads.done_files,
        "done_bytes": downloads.done_bytes,
        "failed_files": downloads.failed_files,
        "rate": downloads.rate(now),
        "eta": downloads.eta(now),
    }


async def status_report(
    runtime: Runtime,
    scheduler: Scheduler,
    *,
    started_at: float,
    draining: bool,
    verify: dict[str, object],
    push: dict[str, Any] | None = None,
    announce: dict[str, Any] | None = None,
    purge: dict[str, Any] | None = None,
    bucket: dict[str, Any] | None = None,
    fleet: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    background: dict[str, object] | None = None,
    log: dict[str, object] | None = None,
) -> StatusReport:
    """Everything an operator asks first; reads the database (on its thread)."""
    now = runtime.clock.time()
    monotonic = runtime.clock.monotonic()
    arches: list[ArchReport] = []
    progress: list[ProgressReport] = []
    for key in runtime.config.arch_keys():
        status = runtime.book[key]
        current = await runtime.db.call(runtime.db.current, str(key))
        snapshot, published_at = current if current else (None, None)
        last = status.last_result
        held = key in scheduler.held
        phase = status.phase
        if phase is Phase.IDLE and held:
            phase = Phase.HELD
        elif phase is Phase.IDLE and scheduler.paused:
            phase = Phase.PAUSED
        arches.append(
            {
                "arch": str(key),
                "state": str(phase),
                "snapshot": snapshot.id if snapshot else None,
                "published_at": published_at,
                "packages": snapshot.packages if snapshot else 0,
                "bytes": snapshot.bytes if snapshot else 0,
                "published_last_modified": status.published_last_modified,
                "origin_last_modified": status.origin_last_modified,
                "lag": status.lag(now),
                "behind_since": status.behind_since,
                "last_poll": status.last_poll,
                "next_poll": status.next_poll,
                "rerun_queued": status.rerun_queued,
                "last_outcome": str(last.outcome) if last else None,
                "last_error": status.last_error,
                "last_success": status.last_success,
                "held": held,
                "syncs": status.runs,
            }
        )
        downloads = status.progress
        if downloads is not None and phase is Phase.SYNCING:
            progress.append(progress_report(key, downloads, monotonic))
    objects, stored_bytes = await runtime.db.call(runtime.db.object_stats)
    traffic = runtime.traffic
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": now - started_at,
        "paused": scheduler.paused,
        "draining": draining,
        "sync": {
            "syncing": [str(k) for k in scheduler.syncing],
            "interval": runtime.config.interval,
            "progress": progress,
        },
        "rate": {
            "limit": traffic.bucket.rate,
            "limit_text": format_rate(traffic.bucket.rate),
            "source": "override" if traffic.override != "schedule" else "config",
            "measured": traffic.meter.rate(),
            "origin_rtt": traffic.origin_rtt,
            "held_back": traffic.held_back(),
        },
        "downloads": {"in_flight": runtime.fetcher.in_flight, "queued": runtime.fetcher.queued},
        "store": {"objects": objects, "bytes": stored_bytes},
        "verify": verify,
        "push": push,
        "announce": announce,
        "purge": purge,
        "bucket": bucket,
        "fleet": fleet,
        "health": health,
        "background": background or {"failures": {}, "last_failure": None},
        "log": log or {"dropped": 0, "trouble": None},
        "tasks": len(asyncio.all_tasks()),
        "arches": arches,
        "trees": trees_report(runtime, now),
    }


def trees_report(runtime: Runtime, now: float) -> TreesReport | None:
    releases = runtime.config.releases
    if releases is None:
        return None
    mirror = runtime.releases
    return {
        "running": mirror.running,
        "latest_stable": mirror.last.latest_stable if mirror.last else None,
        "interval": releases.interval,
        "directories": [
            {
                "directory": status.directory,
                "outcome": status.outcome,
                "error": status.error,
                "checked_at": status.checked_at,
                "published_at": status.published_at,
                "lag": status.lag(now),
                "unverified": status.unverified,
                "pending_removal": status.pending_removal,
                "held": status.held,
            }
            for status in sorted(mirror.status.values(), key=lambda s: s.directory)
        ],
    }
