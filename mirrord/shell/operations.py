"""What an operator can ask of a running daemon (the control socket's commands).

Each method answers with plain data (dicts and lists) that the socket sends as
JSON and ``mirrord ctl`` renders for people.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from mirrord.core.errors import ControlError, PurgeError
from mirrord.core.model import ArchKey
from mirrord.core.units import format_rate, parse_rate
from mirrord.shell.cdn_purge import CdnPurger
from mirrord.shell.control.protocol import Request
from mirrord.shell.status_report import StatusReport, status_report
from mirrord.shell.tree_operations import TreeOperations, is_tree
from mirrord.storage.maintenance import ScrubProgress, scrub
from mirrord.sync.runtime import Runtime
from mirrord.sync.scheduler import Scheduler

RATE_OVERRIDE = "rate_override"  # the settings row of `ctl rate VALUE`, JSON: bytes/s or null


async def restore_rate_override(runtime: Runtime) -> None:
    """Apply the rate an operator set before the last restart, if any."""
    stored = await runtime.db.call(runtime.db.setting, RATE_OVERRIDE)
    if stored is None:
        return
    try:
        rate = json.loads(stored)
    except ValueError:
        rate = "unreadable"
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        runtime.log.warning("traffic.override.unreadable", stored=stored[:80])
        await runtime.db.call(runtime.db.set_setting, RATE_OVERRIDE, None)
        return
    runtime.traffic.set_override(None if rate is None else float(rate))
    runtime.log.info("traffic.override.restored", rate=format_rate(rate))


@dataclass
class DaemonControls:
    """What the commands may ask of the daemon process itself."""

    started_at: float
    reload: Callable[[], Awaitable[dict[str, Any]]]
    drain: Callable[[], None]
    spawn: Callable[[str, Awaitable[None]], None]  # supervised background work
    draining: Callable[[], bool]
    push: Callable[[], dict[str, Any] | None] = lambda: None  # the push trigger's state
    announce: Callable[[], dict[str, Any] | None] = lambda: None  # downstream announcements
    purge: Callable[[], dict[str, Any] | None] = lambda: None  # the CDN purges' state
    bucket: Callable[[], dict[str, Any] | None] = lambda: None  # the S3 bucket's state
    purger: Callable[[], CdnPurger | None] = lambda: None  # the purge service in force
    fleet: Callable[[], dict[str, Any] | None] = lambda: None  # fleet mode's state
    health: Callable[[], Awaitable[dict[str, Any] | None]] | None = None  # GET /health's body
    background: Callable[[], dict[str, object]] = dict  # failures of supervised background work
    log: Callable[[], dict[str, object]] = dict  # lines the log output dropped (logoutput.py)


class Operations:
    def __init__(self, runtime: Runtime, scheduler: Scheduler, daemon: DaemonControls) -> None:
        self.runtime = runtime
        self.scheduler = scheduler
        self.daemon = daemon
        self.scrub = ScrubProgress()
        self.trees = TreeOperations(runtime.releases)

    async def handle(self, request: Request) -> Any:
        method = getattr(self, f"cmd_{request.cmd}")
        result: Any = await method(request)
        return result

    def _split(self, keys: list[ArchKey]) -> tuple[list[ArchKey], list[str]]:
        """(package arches, releases directories) among the names given."""
        configured = self.runtime.config.arch_keys()
        trees = [k for k in keys if is_tree(k, configured)]
        return [k for k in keys if k not in trees], self.trees.known(trees)

    def _tree(self, key: ArchKey) -> bool:
        return is_tree(key, self.runtime.config.arch_keys())

    def _known(self, keys: list[ArchKey]) -> set[ArchKey]:
        configured = set(self.runtime.config.arch_keys())
        unknown = [str(k) for k in keys if k not in configured]
        if unknown:
            raise ControlError("not_found", f"not configured: {', '.join(unknown)}")
        return set(keys)

    # --- the commands ---------------------------------------------------------------

    async def report(self) -> StatusReport:
        """What ``status`` answers, and what the status page and ``/status.json`` show."""
        return await status_report(
            self.runtime,
            self.scheduler,
            started_at=self.daemon.started_at,
            draining=self.daemon.draining(),
            verify=self.scrub.summary(),
            push=self.daemon.push(),
            announce=self.daemon.announce(),
            purge=self.daemon.purge(),
            bucket=self.daemon.bucket(),
            fleet=self.daemon.fleet(),
            health=await self.daemon.health() if self.daemon.health is not None else None,
            background=self.daemon.background(),
            log=self.daemon.log(),
        )

    async def cmd_status(self, request: Request) -> StatusReport:
        return await self.report()

    def _trigger(
        self, keys: set[ArchKey], *, force: bool = False, release: bool = True
    ) -> dict[str, Any]:
        answers = {
            str(key): str(self.scheduler.request(key, force=force, release=release))
            for key in sorted(keys)
        }
        return {"queued": sorted(answers), "arches": answers, "paused": self.scheduler.paused}

    async def cmd_sync(self, request: Request) -> dict[str, Any]:
        arches, trees = self._split(request.arches())
        named = self._known(arches)
        if trees and not named:  # releases directories only: a releases pass now
            answers = self.trees.sync(trees)
            return {"queued": sorted(answers), "arches": answers, "paused": self.scheduler.paused}
        keys = named or set(self.runtime.config.arch_keys()) - self.scheduler.held
        result = self._trigger(keys, release=bool(named))
        if trees or (not named and self.runtime.config.releases is not None):
            answers = self.trees.sync(trees) if trees else {}
            if not trees:
                self.runtime.releases.ask()
            result["arches"].update(answers)
            result["queued"] = sorted(result["arches"])
        return result

    async def cmd_pause(self, request: Request) -> dict[str, Any]:
        self.scheduler.pause()
        return {"paused": True}

    async def cmd_resume(self, request: Request) -> dict[str, Any]:
        arches, trees = self._split(request.arches())
        keys = self._known(arches)
        if keys or trees:
            if keys:
                self._trigger(keys)
            if trees:
                self.trees.sync(trees)
            return {"released": sorted([*(str(k) for k in keys), *trees])}
        self.scheduler.resume()
        return {"paused": False}

    async def cmd_rate(self, request: Request) -> dict[str, Any]:
        traffic = self.runtime.traffic
        db = self.runtime.db
        value = request.args.get("value")
        if value == "schedule":
            traffic.clear_override()
            await db.call(db.set_setting, RATE_OVERRIDE, None)
        elif value is not None:
            rate = parse_rate(value)
            traffic.set_override(rate)
            # Kept across restarts: an operator who throttled a link expects it to stay so.
            await db.call(db.set_setting, RATE_OVERRIDE, json.dumps(rate))
        return {
            "limit": traffic.bucket.rate,
            "limit_text": format_rate(traffic.bucket.rate),
            "source": "override" if traffic.override != "schedule" else "config",
            "kept_across_restarts": traffic.override != "schedule",
        }

    async def cmd_snapshots(self, request: Request) -> dict[str, Any]:
        key = request.arch()
        if self._tree(key):
            return await self.trees.snapshots(key)
        self._known([key])
        db = self.runtime.db
        current = await db.call(db.current, str(key))
        current_id = current[0].id if current else None
        snapshots = await db.call(db.snapshots, str(key))
        return {
            "arch": str(key),
            "snapshots": [
                {
                    "id": s.id,
                    "created_at": s.created_at,
                    "status": s.status,
                    "current": s.id == current_id,
                    "packages": s.packages,
                    "bytes": s.bytes,
                    "index_sha256": s.index_sha256,
                    "last_modified": s.last_modified,
                    "description": s.description,
                    "forced": s.forced,
                }
                for s in snapshots
            ],
        }

    async def cmd_rollback(self, request: Request) -> dict[str, Any]:
        key = request.arch()
        if self._tree(key):
            return await self.trees.rollback(key, int(request.args["snapshot"]))
        self._known([key])
        snapshot = await self.runtime.engine.rollback(key, int(request.args["snapshot"]))
        self.scheduler.hold(key)  # or the next poll would publish the origin's index again
        return {
            "arch": str(key),
            "snapshot": snapshot.id,
            "held": True,
            "note": f"held: {key} is polled but not published until "
            f"'mirrord ctl resume {key}' or 'sync {key}'",
        }

    async def cmd_publish(self, request: Request) -> dict[str, Any]:
        key = request.arch()
        tree = self._tree(key)
        if tree:
            self.trees.known([key])
        else:
            self._known([key])
        if not request.args.get("force"):
            raise ControlError("bad_request", "publish needs --force (it overrides the guard once)")
        if tree:
            answers = self.trees.sync([str(key)], force=True)
            return {"forced": str(key), "queued": [str(key)], "arches": answers, "paused": False}
        return {"forced": str(key), **self._trigger({key}, force=True)}

    async def cmd_verify(self, request: Request) -> dict[str, Any]:
        if self.scrub.running:
            raise ControlError("conflict", "a verify is already running")
        self.scrub = progress = ScrubProgress(running=True, repair=bool(request.args.get("repair")))
        self.daemon.spawn("verify", self._run_scrub(progress))
        return progress.summary()

    async def _run_scrub(self, progress: ScrubProgress) -> None:
        runtime = self.runtime
        repairing = runtime.settlement.at_risk("verify --repair")  # removes, then forgets
        try:
            with repairing if progress.repair else nullcontext():
                bad = await scrub(
                    runtime.store,
                    runtime.db,
                    progress,
                    clock=runtime.clock,
                    log=runtime.log,
                    on_bad=lambda kind: runtime.metrics.damaged_objects.labels(kind=kind).inc(),
                )
        finally:
            progress.running = False
            progress.ended.set()
        if bad and progress.repair:
            # The damaged bytes may be published: fetch them again and re-link every arch.
            runtime.fetcher.forget_recent()
            keys = runtime.config.arch_keys()
            for key in keys:
                runtime.book[key].relink = True
            self._trigger(set(keys) - self.scheduler.held, release=False)

    async def cmd_gc(self, request: Request) -> dict[str, Any]:
        report = await self.runtime.engine.collect_garbage()
        return {
            "deleted_objects": report.deleted,
            "freed_bytes": report.freed,
            "kept_listed": report.listed,
            "kept_recent": report.recent,
            "kept_in_use": report.in_use,
            "grace": self.runtime.config.publish.grace,
        }

    async def cmd_reload(self, request: Request) -> dict[str, Any]:
        return await self.daemon.reload()

    async def cmd_purge(self, request: Request) -> dict[str, Any]:
        purger = self.daemon.purger()
        if purger is None:
            raise ControlError("unsupported", "nothing to purge through: no purge section")
        paths = request.paths()
        try:
            results = await purger.purge_paths(paths)
        except PurgeError as error:
            raise ControlError("unavailable", error.reason) from None
        return {"paths": list(paths), "results": results}

    async def cmd_drain(self, request: Request) -> dict[str, Any]:
        self.daemon.drain()
        return {"draining": True, "note": "finishing the syncs in progress, then stopping"}
