"""Every arch on its own timer: no arch waits for another, and lag never lies.

Each configured branch/repo/arch has a loop of its own: it waits for its
next poll (``interval`` after its last one started) or a trigger (``ctl
sync``, a push, ``resume``), then syncs, so a huge arch's first download
never delays a small arch's poll, plan or publish. Downloads still share the
fetcher's one fair window and rate limit. A trigger for an arch that is
syncing queues exactly one more sync after it. Held arches (after a
rollback) and every arch while the daemon is paused are still polled, for
lag alone, so the status and ``mirrord_mirror_lag_seconds`` always say how
far behind the origin each arch is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from structlog.typing import FilteringBoundLogger

from mirrord.core.aio import first_completed
from mirrord.core.clock import Clock
from mirrord.core.model import ArchKey
from mirrord.sync.engine import SyncEngine
from mirrord.sync.live import LiveConfig
from mirrord.sync.status import Phase, StatusBook


class Trigger(StrEnum):
    """What a sync request did."""

    STARTED = "started"  # the arch was idle: it syncs now
    QUEUED = "queued"  # it is syncing: one more sync follows this one
    ALREADY_QUEUED = "already_queued"  # one more sync was already asked for
    PAUSED = "paused"  # the daemon is paused: it syncs on resume


@dataclass
class _Slot:
    """One arch's timer and triggers (the scheduler's own bookkeeping)."""

    key: ArchKey
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_started: float | None = None  # monotonic; None: due now
    due_now: bool = True
    running: bool = False
    force: bool = False
    retired: bool = False
    looping: bool = False  # its loop task has been started


class Scheduler:
    def __init__(
        self,
        engine: SyncEngine,
        live: LiveConfig,
        book: StatusBook,
        *,
        clock: Clock,
        log: FilteringBoundLogger,
    ) -> None:
        self._engine = engine
        self._live = live
        self._book = book
        self._clock = clock
        self._log = log
        self._slots: dict[ArchKey, _Slot] = {}
        self._group: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()
        self._looked = asyncio.Condition()  # a sync or a lag-only poll has ended
        self.paused = False
        self.held: set[ArchKey] = set()
        self._follow_config()

    # --- what operators and triggers ask ---------------------------------------------

    def request(self, key: ArchKey, *, force: bool = False, release: bool = True) -> Trigger:
        """Sync ``key`` now, or once more after the sync in progress; naming it ends a hold."""
        slot = self._slots[key]
        if release:
            self.held.discard(key)
        slot.force = slot.force or force
        if self.paused:
            slot.due_now = True
            return Trigger.PAUSED
        if slot.running:
            if slot.due_now:
                return Trigger.ALREADY_QUEUED
            slot.due_now = True
            self._book[key].rerun_queued = True
            return Trigger.QUEUED
        slot.due_now = True
        slot.wake.set()
        return Trigger.STARTED

    def hold(self, key: ArchKey) -> None:
        """Publish nothing for ``key`` until released; poll it now, for its lag."""
        self.held.add(key)
        self._book[key].phase = Phase.HELD
        slot = self._slots[key]
        slot.due_now = True
        slot.wake.set()

    def pause(self) -> None:
        self.paused = True
        self._engine.fetcher.pause()

    def resume(self) -> None:
        self.paused = False
        self._engine.fetcher.resume()
        for slot in self._slots.values():
            slot.due_now = True
            slot.wake.set()

    def stop(self) -> None:
        """Start no more syncs; syncs in progress finish (``run`` returns after them)."""
        self._stopping.set()
        for slot in self._slots.values():
            slot.wake.set()

    def reconfigure(self) -> None:
        """Follow the live configuration: loops for new arches, none for removed ones."""
        self._follow_config()
        for slot in self._slots.values():
            slot.wake.set()  # the interval may have changed

    @property
    def scheduled(self) -> list[ArchKey]:
        """The arches ``request`` accepts: each has its loop."""
        return list(self._slots)

    @property
    def syncing(self) -> list[ArchKey]:
        return sorted(key for key, slot in self._slots.items() if slot.running)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate`` holds, checked after every sync and every lag-only poll."""
        async with self._looked:
            await self._looked.wait_for(predicate)

    async def wait_for_runs(self, key: ArchKey, count: int) -> None:
        """Until ``key`` has ended ``count`` syncs since start-up."""
        await self.wait_until(lambda: self._book[key].runs >= count)

    async def _notify(self) -> None:
        async with self._looked:
            self._looked.notify_all()

    # --- the loops ------------------------------------------------------------------

    async def run(self) -> None:
        """Run every arch's loop until ``stop``; returns when the last sync has ended."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._follow_config()
            await self._stopping.wait()
        self._group = None

    def _follow_config(self) -> None:
        """A slot for every configured arch (so requests work at once), a loop once running."""
        configured = self._live.config.arch_keys()
        for key in configured:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot(key)
            if self._group is not None and not slot.looping:
                slot.looping = True
                self._group.create_task(self._arch_loop(slot), name=f"schedule {key}")
        for key in set(self._slots) - set(configured):
            slot = self._slots.pop(key)
            slot.retired = True
            slot.wake.set()
            self.held.discard(key)
        self._book.forget_others(configured)

    def _done(self, slot: _Slot) -> bool:
        return slot.retired or self._stopping.is_set()

    async def _arch_loop(self, slot: _Slot) -> None:
        key = slot.key
        await self._guarded(key, self._engine.load_status(key))
        while True:
            await self._until_due(slot)
            if self._done(slot):
                return
            slot.due_now = False
            slot.last_started = self._clock.monotonic()
            self._book[key].rerun_queued = False
            if self.paused or key in self.held:
                self._book[key].phase = Phase.PAUSED if self.paused else Phase.HELD
                await self._guarded(key, self._engine.probe(key))
                await self._notify()
                continue
            force, slot.force = slot.force, False
            slot.running = True
            self._book[key].phase = Phase.SYNCING
            try:
                await self._engine.sync_arch(key, force=force, quiet_unchanged=True)
            finally:
                slot.running = False
                self._book[key].phase = Phase.IDLE
            await self._notify()

    async def _guarded(self, key: ArchKey, work: Coroutine[Any, Any, None]) -> None:
        """A failure here costs this look at the arch, never the arch's loop."""
        try:
            await work
        except Exception:  # a bug or a broken disk: logged, and the next poll tries again
            self._log.exception("schedule.arch.crashed", arch=str(key))

    async def _until_due(self, slot: _Slot) -> None:
        status = self._book[slot.key]
        while not self._done(slot):
            now = self._clock.monotonic()
            due = (
                now
                if slot.due_now or slot.last_started is None
                else slot.last_started + self._live.config.interval
            )
            if due <= now:
                status.next_poll = self._clock.time()
                return
            status.next_poll = self._clock.time() + (due - now)
            slot.wake.clear()
            await first_completed(self._clock.sleep(due - now), slot.wake.wait())
