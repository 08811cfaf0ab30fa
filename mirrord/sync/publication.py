"""The publish transaction of one arch, shared by a new publish and a rollback.

Files first, index last (``Publisher.stage``, then ``go_live`` by rename), then the record:
the snapshot becomes current, files it no longer lists are scheduled for
deletion after ``publish.grace``, and what is due is deleted. The status
book learns what is served.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import ControlError, FleetSupersededError, PublishError
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.fetch.origin import IndexResult
from mirrord.publish.fleetplan import Decision, Verdict
from mirrord.publish.plan import PublishPlan, due_deletions, plan_rollback
from mirrord.publish.publisher import INDEX_NAME, Publisher
from mirrord.storage.statedb import Snapshot, StateDB
from mirrord.sync.feed import Published, PublishFeed
from mirrord.sync.live import LiveConfig
from mirrord.sync.status import StatusBook

STORE_COUNT_EVERY = 60.0  # seconds between counts of the store after publishes


@dataclass
class NewIndex:
    """A verified index from the origin and the publish it asks for."""

    response: IndexResult  # its validators; the body is in the store (``index_sha256``)
    index_size: int
    description: str
    plan: PublishPlan
    force: bool
    index_sha256: str  # the index object's digest (stored once planned)


class StageBarrier(Protocol):
    """Fleet mode (``mirrord.sync.fleet``): between staging an index and making it live."""

    async def wait_staged(
        self, key: ArchKey, digest: str, origin_mtime: float | None
    ) -> Decision: ...

    async def went_live(self, key: ArchKey, digest: str, origin_mtime: float | None) -> None: ...

    def serving(
        self, key: ArchKey, digest: str, origin_mtime: float | None, since: float
    ) -> None: ...


@dataclass
class Publication:
    live: LiveConfig
    publisher: Publisher
    db: StateDB
    clock: Clock
    log: FilteringBoundLogger
    metrics: Metrics
    book: StatusBook
    crash: CrashPoints
    feed: PublishFeed = field(default_factory=PublishFeed)
    barrier: StageBarrier | None = None  # fleet mode: no index live before the fleet staged it
    _store_counted: float = float("-inf")

    async def publish(self, key: ArchKey, new: NewIndex, log: FilteringBoundLogger) -> int:
        """Files first, index last; the snapshot record comes after the index is live.

        Recording the snapshot (a list of every file) costs time in proportion
        to the arch, so it stays off the path to the new index. If the process
        dies in between, recovery adopts the published index as the snapshot.
        """
        plan = new.plan
        last_modified = new.response.last_modified_ts
        await self._write_tree(key, plan, new.index_sha256, last_modified, log, fleet=True)
        known = await self.db.call(self.db.find_snapshot_by_index, str(key), new.index_sha256)
        if known is not None and known.status in ("published", "superseded"):
            # The same index again (a release after a rollback, a repair): the same
            # snapshot, not a copy that would push older ones out of keep_snapshots.
            await self.db.call(
                self.db.update_validators, known.id, new.response.etag, new.response.last_modified
            )
            await self._make_current(key, known.id, plan)
            return known.id
        snapshot_id = await self.db.call(
            self.db.add_snapshot,
            str(key),
            created_at=self.clock.time(),
            index_sha256=new.index_sha256,
            index_size=new.index_size,
            last_modified=last_modified,
            etag=new.response.etag,
            last_modified_header=new.response.last_modified,
            description=new.description,
            files=plan.files,
            status="published",
            forced=new.force and bool(plan.dropped_packages),
        )
        await self._make_current(key, snapshot_id, plan)
        if new.force and plan.dropped_packages:
            log.warning("publish.forced", dropped=len(plan.dropped_packages))
        await self.db.call(
            self.db.prune_snapshots, str(key), self.live.config.publish.keep_snapshots
        )
        return snapshot_id

    async def rollback(self, key: ArchKey, snapshot_id: int) -> Snapshot:
        """Publish an earlier snapshot again: files first, index last, as always.

        The caller holds the arch's lock.
        """
        arch = str(key)
        snapshot = await self.db.call(self.db.snapshot, snapshot_id)
        if snapshot is None or snapshot.arch != arch:
            raise ControlError("not_found", f"{arch} has no snapshot {snapshot_id}")
        files = await self.db.call(self.db.snapshot_files, snapshot_id)
        needed = [f.sha256 for f in files if f.sha256] + [snapshot.index_sha256]
        store = self.publisher.store
        if any(not f.sha256 for f in files) or not all(
            await asyncio.to_thread(lambda: [store.has(s) for s in needed])
        ):
            raise ControlError(
                "not_found",
                f"snapshot {snapshot_id} of {arch} is no longer complete in the store "
                "(garbage-collected or adopted without its bytes)",
            )
        current = await self.db.call(self.db.current, arch)
        previous = await self.db.call(self.db.snapshot_files, current[0].id) if current else None
        plan = plan_rollback(key, files, previous)
        await self._write_tree(
            key, plan, snapshot.index_sha256, snapshot.last_modified, self.log.bind(arch=arch)
        )
        await self._make_current(key, snapshot_id, plan)
        self.log.warning(
            "publish.rollback.done", arch=arch, snapshot=snapshot_id, packages=len(files)
        )
        return snapshot

    async def _write_tree(
        self,
        key: ArchKey,
        plan: PublishPlan,
        index_sha256: str,
        last_modified: float | None,
        log: FilteringBoundLogger,
        *,
        fleet: bool = False,
    ) -> None:
        """Files, then the index, linked in from the store (its bytes never held here).

        ``fleet``: pass the fleet's barrier between the two. A rollback does not:
        an operator's act on one node, not a generation (but the fleet learns
        what is live either way).
        """
        labels = Metrics.labels(key)
        started = self.clock.monotonic()
        barrier = self.barrier
        try:
            await asyncio.to_thread(self.publisher.stage, key, plan.to_link)
            if barrier is not None and fleet:
                decision = await barrier.wait_staged(key, index_sha256, last_modified)
                if decision.verdict is Verdict.SUPERSEDED:
                    raise FleetSupersededError(str(key), decision.missing)
            await asyncio.to_thread(self.publisher.go_live, key, index_sha256, last_modified)
            if barrier is not None:  # a rollback too: the fleet learns what we serve
                await barrier.went_live(key, index_sha256, last_modified)
        except OSError as error:
            self.metrics.publishes.labels(**labels, outcome="failed").inc()
            raise PublishError(
                str(key),
                f"cannot write the published tree: {error.strerror or error} ({error.filename})",
            ) from None
        seconds = self.clock.monotonic() - started
        self.metrics.publish_duration.observe(seconds)
        self.metrics.publishes.labels(**labels, outcome="published").inc()
        if plan.replaced:
            log.warning(
                "publish.files.replaced",
                count=len(plan.replaced),
                files=list(plan.replaced[:10]),
                note="the origin changed these files' bytes without a new version",
            )
        log.info(
            "publish.snapshot.done",
            packages=len(plan.files),
            linked=len(plan.link),
            unlisted=len(plan.unlisted),
            seconds=round(seconds, 4),
        )

    async def _make_current(self, key: ArchKey, snapshot_id: int, plan: PublishPlan) -> None:
        """The index is live: record it, schedule what it no longer lists, expire what is due."""
        arch = str(key)
        now = self.clock.time()
        await self.db.call(self.db.set_current, arch, snapshot_id, now)
        self.crash.reach("publish.after_record")
        if plan.unlisted:
            await self.db.call(self.db.schedule_deletions, arch, plan.unlisted, now)
        snapshot = await self.db.call(self.db.snapshot, snapshot_id)
        assert snapshot is not None
        self.note_current(key, snapshot, now)
        self.feed.announce(Published(arch, (f"{arch}/{INDEX_NAME}",), now))
        await self.expire(key)
        if self.clock.monotonic() - self._store_counted >= STORE_COUNT_EVERY:
            await self.count_store()

    def note_served_at_start(self, key: ArchKey, snapshot: Snapshot, published_at: float) -> None:
        """What a first look since start-up found live: the book, and the fleet, learn it.

        The index on disk is not vouched for yet (it may have been replaced while
        no mirrord ran): the first ``index_intact`` compares its digest.
        """
        self.book.note_published(key, snapshot, published_at, index_stat=None)
        if self.barrier is not None:
            self.barrier.serving(key, snapshot.index_sha256, snapshot.last_modified, published_at)

    def note_current(self, key: ArchKey, snapshot: Snapshot, published_at: float) -> None:
        try:
            info = os.stat(self.publisher.arch_dir(key) / INDEX_NAME)
            index_stat: tuple[int, int] | None = (info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            index_stat = None
        self.book.note_published(key, snapshot, published_at, index_stat)

    async def index_intact(self, key: ArchKey, snapshot: Snapshot) -> bool:
        """Is the index on disk still the one we published, and no repair asked? (stat only)"""
        status = self.book[key]
        if status.relink:
            return False
        path = self.publisher.arch_dir(key) / INDEX_NAME
        try:
            info = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return False
        if status.index_stat is None:
            if not await asyncio.to_thread(self.publisher.index_is, key, snapshot.index_sha256):
                return False
            status.index_stat = (info.st_size, info.st_mtime_ns)
        return status.index_stat == (info.st_size, info.st_mtime_ns)

    async def expire(self, key: ArchKey) -> list[str]:
        """Delete the files whose grace period is over and that no index lists again."""
        arch = str(key)
        pending = await self.db.call(self.db.pending_deletions, arch)
        if not pending:
            return []
        current = await self.db.call(self.db.current, arch)
        listed = (
            set((await self.db.call(self.db.snapshot_files, current[0].id)).names())
            if current
            else set()
        )
        due, relisted = due_deletions(
            pending, listed, now=self.clock.time(), grace=self.live.config.publish.grace
        )
        deleted: list[str] = []
        if due:
            deleted = await asyncio.to_thread(self.publisher.delete, key, due)
            self.metrics.deleted_files.inc(len(deleted))
            self.log.info("publish.files.expired", arch=arch, deleted=len(deleted))
        if due or relisted:
            await self.db.call(self.db.cancel_deletions, arch, due + relisted)
        return deleted

    async def count_store(self, *, after_change: bool = True) -> None:
        """Refresh the store's size in the book (a scan of every object: not at every publish).

        ``after_change=False`` (a count at start-up) leaves the next publish free to count.
        """
        if after_change:
            self._store_counted = self.clock.monotonic()
        self.book.note_store(*await self.db.call(self.db.object_stats))
