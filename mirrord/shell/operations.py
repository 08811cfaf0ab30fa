"""What an operator can ask of a running daemon (the control socket's commands).

Each method answers with plain data (dicts and lists) that the socket sends as
JSON and ``mirrord ctl`` renders for people.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mirrord import __version__
from mirrord.core.errors import ControlError
from mirrord.core.model import ArchKey
from mirrord.core.units import format_rate, parse_rate
from mirrord.shell.control.protocol import Request
from mirrord.storage.maintenance import ScrubProgress, collect_garbage, scrub
from mirrord.sync.runtime import Runtime


@dataclass
class DaemonState:
    """The daemon's own switches, shared by the pass loop and the commands."""

    started_at: float = field(default_factory=time.time)
    paused: bool = False
    draining: bool = False
    held: set[ArchKey] = field(default_factory=set)
    force_next: set[ArchKey] = field(default_factory=set)
    requested: set[ArchKey] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    pass_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    passes: int = 0
    pass_running: bool = False
    last_pass_started: float | None = None
    last_pass_seconds: float | None = None
    scrub: ScrubProgress = field(default_factory=ScrubProgress)
    pass_finished: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for_passes(self, count: int) -> None:
        """Until ``count`` passes have ended (for tests and ``ctl sync --wait``)."""
        async with self.pass_finished:
            await self.pass_finished.wait_for(lambda: self.passes >= count)

    def request_sync(self, keys: set[ArchKey], *, release: bool = True) -> None:
        """Sync these arches now; naming a held arch ends its hold."""
        self.requested |= keys
        if release:
            self.held -= keys
        self.wake.set()

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake.set()


class Operations:
    def __init__(
        self,
        state: DaemonState,
        runtime: Runtime,
        *,
        reload: Callable[[], Awaitable[dict[str, Any]]],
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self.state = state
        self.runtime = runtime
        self._reload = reload
        self._spawn = spawn

    async def handle(self, request: Request) -> Any:
        method = getattr(self, f"cmd_{request.cmd}")
        result: Any = await method(request)
        return result

    def _known(self, keys: list[ArchKey]) -> set[ArchKey]:
        configured = set(self.runtime.engine.config.arch_keys())
        unknown = [str(k) for k in keys if k not in configured]
        if unknown:
            raise ControlError("not_found", f"not configured: {', '.join(unknown)}")
        return set(keys)

    # --- the commands ---------------------------------------------------------------

    async def cmd_status(self, request: Request) -> dict[str, Any]:
        runtime = self.runtime
        state = self.state
        now = runtime.clock.time()
        arches: list[dict[str, Any]] = []
        for key in runtime.engine.config.arch_keys():
            arch_state = runtime.engine.state(key)
            current = await runtime.db.call(runtime.db.current, str(key))
            snapshot, published_at = current if current else (None, None)
            last = arch_state.last_result
            arches.append(
                {
                    "arch": str(key),
                    "snapshot": snapshot.id if snapshot else None,
                    "published_at": published_at,
                    "packages": snapshot.packages if snapshot else 0,
                    "bytes": snapshot.bytes if snapshot else 0,
                    "published_last_modified": arch_state.published_last_modified,
                    "origin_last_modified": arch_state.origin_last_modified,
                    "lag": (now - arch_state.behind_since) if arch_state.behind_since else 0.0,
                    "last_outcome": last.outcome if last else None,
                    "last_error": arch_state.last_error,
                    "last_success": arch_state.last_success,
                    "held": key in state.held,
                }
            )
        objects, stored_bytes = await runtime.db.call(runtime.db.object_stats)
        traffic = runtime.traffic
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": time.time() - state.started_at,
            "paused": state.paused,
            "draining": state.draining,
            "pass": {
                "running": state.pass_running,
                "count": state.passes,
                "last_started": state.last_pass_started,
                "last_seconds": state.last_pass_seconds,
            },
            "rate": {
                "limit": traffic.bucket.rate,
                "limit_text": format_rate(traffic.bucket.rate),
                "source": "override" if traffic.override != "schedule" else "config",
                "measured": traffic.meter.rate(),
            },
            "downloads": {"in_flight": runtime.fetcher.in_flight, "queued": runtime.fetcher.queued},
            "store": {"objects": objects, "bytes": stored_bytes},
            "verify": state.scrub.summary(),
            "arches": arches,
        }

    async def cmd_sync(self, request: Request) -> dict[str, Any]:
        named = self._known(request.arches())
        keys = named or set(self.runtime.engine.config.arch_keys()) - self.state.held
        self.state.request_sync(keys, release=bool(named))
        return {"queued": sorted(str(k) for k in keys)}

    async def cmd_pause(self, request: Request) -> dict[str, Any]:
        self.state.paused = True
        self.runtime.fetcher.pause()
        return {"paused": True}

    async def cmd_resume(self, request: Request) -> dict[str, Any]:
        keys = self._known(request.arches())
        if keys:
            self.state.held -= keys
            self.state.request_sync(keys)
            return {"released": sorted(str(k) for k in keys)}
        self.state.paused = False
        self.runtime.fetcher.resume()
        self.state.wake.set()
        return {"paused": False}

    async def cmd_rate(self, request: Request) -> dict[str, Any]:
        traffic = self.runtime.traffic
        value = request.args.get("value")
        if value == "schedule":
            traffic.clear_override()
        elif value is not None:
            traffic.set_override(parse_rate(value))
        return {
            "limit": traffic.bucket.rate,
            "limit_text": format_rate(traffic.bucket.rate),
            "source": "override" if traffic.override != "schedule" else "config",
        }

    async def cmd_snapshots(self, request: Request) -> dict[str, Any]:
        key = request.arch()
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
        self._known([key])
        async with self.state.pass_lock:
            snapshot = await self.runtime.engine.rollback(key, int(request.args["snapshot"]))
        self.state.held.add(key)  # or the next poll would publish the origin's index again
        return {
            "arch": str(key),
            "snapshot": snapshot.id,
            "held": True,
            "note": f"held: passes skip {key} until 'mirrord ctl resume {key}' or 'sync {key}'",
        }

    async def cmd_publish(self, request: Request) -> dict[str, Any]:
        key = request.arch()
        self._known([key])
        if not request.args.get("force"):
            raise ControlError("bad_request", "publish needs --force (it overrides the guard once)")
        self.state.force_next.add(key)
        self.state.request_sync({key})
        return {"forced": str(key), "queued": [str(key)]}

    async def cmd_verify(self, request: Request) -> dict[str, Any]:
        progress = self.state.scrub
        if progress.running:
            raise ControlError("conflict", "a verify is already running")
        self.state.scrub = progress = ScrubProgress(
            running=True, repair=bool(request.args.get("repair"))
        )
        self._spawn(self._run_scrub(progress))
        return progress.summary()

    async def _run_scrub(self, progress: ScrubProgress) -> None:
        runtime = self.runtime
        try:
            bad = await scrub(
                runtime.store, runtime.db, progress, clock=runtime.clock, log=runtime.log
            )
        finally:
            progress.running = False
        if bad and progress.repair:
            # The damaged bytes may be published: fetch them again and re-link every arch.
            for key in runtime.engine.config.arch_keys():
                runtime.engine.state(key).relink = True
            self.state.request_sync(set(runtime.engine.config.arch_keys()))

    async def cmd_gc(self, request: Request) -> dict[str, Any]:
        runtime = self.runtime
        async with self.state.pass_lock:
            objects, freed = await collect_garbage(
                runtime.store,
                runtime.db,
                clock=runtime.clock,
                grace=runtime.engine.config.publish.grace,
                log=runtime.log,
            )
        return {"deleted_objects": objects, "freed_bytes": freed}

    async def cmd_reload(self, request: Request) -> dict[str, Any]:
        return await self._reload()

    async def cmd_drain(self, request: Request) -> dict[str, Any]:
        self.state.draining = True
        self.state.wake.set()
        return {"draining": True, "note": "finishing the current pass, then stopping"}
