"""One arch's pipeline: poll -> plan -> acquire -> publish, each a short step.

``sync_arch`` brings one branch/repo/arch up to date and never raises a
MirrordError: it becomes the result, and the last good snapshot keeps being
served. Arches run side by side (the scheduler starts each on its own timer)
and share the fetcher's fair download window; ``run_pass`` runs a set of
arches once, for the one-shot ``mirrord sync``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import random
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.apkindex import open_index_archive
from mirrord.core.aio import first_of_group
from mirrord.core.clock import Clock
from mirrord.core.errors import (
    DiskSpaceError,
    DownloadsFailedError,
    FleetSupersededError,
    IndexRejectedError,
    MassDeletionError,
    MirrordError,
    OlderIndexError,
    OriginError,
    PermanentOriginError,
    ShuttingDownError,
    SignatureError,
    UnsafeIndexError,
    said_beside,
)
from mirrord.core.heap import release_free_memory
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.fetch.fetcher import Fetcher
from mirrord.fetch.origin import IndexResult, OriginClient
from mirrord.fetch.retry import call_with_retries, retry_reason
from mirrord.fetch.seed import seed_from_tree
from mirrord.publish.generations import goes_back
from mirrord.publish.plan import Listing, PublishPlan, list_files, plan_listing
from mirrord.publish.publisher import Publisher
from mirrord.storage.committer import Committer
from mirrord.storage.filetable import FileTable
from mirrord.storage.maintenance import GarbageReport, InUse, collect_garbage
from mirrord.storage.space import free_bytes, shortfall
from mirrord.storage.statedb import Snapshot, StateDB
from mirrord.sync.live import LiveConfig
from mirrord.sync.publication import NewIndex, Publication
from mirrord.sync.status import ArchResult, OriginSeen, Outcome, StatusBook

# Identities per store lookup while planning: a lookup of a whole arch held 25,000
# (C:, S:) tuples and, in a steady state, a found digest for each, all at once.
LOOKUP_BATCH = 2000
FETCH_WINDOW = 4096  # downloads queued or awaiting their commit, over all arches
MISSING_FIRST_WAIT = 5.0  # seconds before asking again for packages the origin lacks
MISSING_MAX_WAIT = 60.0
SUPERSEDED_ATTEMPTS = 3  # fleet mode: polls in a row when another node staged a newer index


@dataclass
class SyncEngine:
    live: LiveConfig
    origin: OriginClient
    fetcher: Fetcher
    committer: Committer
    publisher: Publisher
    db: StateDB
    clock: Clock
    log: FilteringBoundLogger
    metrics: Metrics
    book: StatusBook
    publication: Publication
    rng: random.Random = field(default_factory=random.Random)
    _locks: dict[ArchKey, asyncio.Lock] = field(default_factory=dict)
    # Store lookups and garbage collection take turns: an object a plan has
    # just found cannot be collected before the plan pins it.
    _store_gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    _syncing: dict[ArchKey, NewIndex] = field(default_factory=dict)  # planned, not recorded
    # One window for every arch: each queued job holds a future and callbacks, and
    # four arches with a window each held four times the jobs for no extra speed.
    _fetch_slots: asyncio.Semaphore | None = None
    # Objects another publisher needs (the releases trees): never garbage.
    also_in_use: Callable[[], AbstractSet[str]] = frozenset

    def _lock(self, key: ArchKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def busy(self, key: ArchKey) -> bool:
        return self._lock(key).locked()

    async def run_pass(
        self, keys: Sequence[ArchKey] | None = None, force: frozenset[ArchKey] = frozenset()
    ) -> list[ArchResult]:
        """Sync these arches (default: all configured) once, side by side."""
        chosen = list(keys) if keys is not None else self.live.config.arch_keys()
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self.sync_arch(key, force=key in force), name=f"sync {key}")
                for key in chosen
            ]
        return [task.result() for task in tasks]

    async def sync_arch(
        self, key: ArchKey, *, force: bool = False, quiet_unchanged: bool = False
    ) -> ArchResult:
        """Bring one arch up to date; never raises a MirrordError (it becomes the result).

        ``quiet_unchanged``: log an unchanged arch at debug level (the daemon
        polls every arch every minute; its summary line says they are current).
        """
        async with self._lock(key):
            started = self.clock.monotonic()
            log = self.log.bind(arch=str(key))
            self.book[key].retries = 0
            try:
                with first_of_group(MirrordError, OSError):  # a nested task group's own error
                    result = await self._sync_newest(key, force, log)
            except (MassDeletionError, OlderIndexError, DiskSpaceError) as error:
                result = ArchResult(key, Outcome.REFUSED, error=said_beside(error))
            except ShuttingDownError as error:
                result = ArchResult(key, Outcome.INTERRUPTED, error=str(error))
            except DownloadsFailedError as error:
                interrupted = isinstance(error.first, ShuttingDownError)
                outcome = Outcome.INTERRUPTED if interrupted else Outcome.FAILED
                result = ArchResult(key, outcome, error=str(error))
            except MirrordError as error:
                result = ArchResult(key, Outcome.FAILED, error=said_beside(error))
            except OSError as error:  # the disk (EIO, ENOSPC) where no layer mapped it
                where = f"{error.filename}: " if error.filename else ""
                result = ArchResult(key, Outcome.FAILED, error=f"{where}{error.strerror or error}")
            except Exception as error:  # a bug must fail this arch's sync, not the daemon
                log.exception("sync.arch.crashed")
                result = ArchResult(key, Outcome.FAILED, error=f"internal error: {error!r}")
            finally:
                self._syncing.pop(key, None)
            seconds = self.clock.monotonic() - started
            result = replace(result, seconds=seconds)
            self.metrics.sync_duration.observe(seconds)
            self.book.note_result(result, self.clock.time())
            _log_result(log, result, self.book[key].retries, quiet_unchanged=quiet_unchanged)
            if result.outcome is not Outcome.UNCHANGED:
                release_free_memory()  # the arch's plan and index are garbage now
            return result

    # --- one arch: poll -> plan -> acquire -> publish -------------------------------

    async def _sync_newest(
        self, key: ArchKey, force: bool, log: FilteringBoundLogger
    ) -> ArchResult:
        """``_sync``, polled again when the fleet has moved on to a newer index (fleet mode)."""
        for attempt in range(1, SUPERSEDED_ATTEMPTS + 1):
            try:
                return await self._sync(key, force, log)
            except FleetSupersededError as error:
                if attempt == SUPERSEDED_ATTEMPTS:
                    raise
                log.info("fleet.stage.superseded", nodes=list(error.nodes), attempt=attempt)
        raise AssertionError("unreachable")

    async def _sync(self, key: ArchKey, force: bool, log: FilteringBoundLogger) -> ArchResult:
        snapshot = await self._current_snapshot(key)
        trusted = snapshot is not None and await self.publication.index_intact(key, snapshot)
        response = await self._poll(key, snapshot if trusted else None, log)
        body = await self._new_index(key, response, snapshot, trusted)
        if body is None:
            assert snapshot is not None
            await self.publication.expire(key)
            return ArchResult(
                key, Outcome.UNCHANGED, packages=snapshot.packages, snapshot_id=snapshot.id
            )
        self._refuse_going_back(key, snapshot, force)
        new = await self._plan(key, response, body, snapshot, force=force, trusted=trusted, log=log)
        await self.committer.commit_bytes(body)
        del body, response  # stored now: the publish reads it back, not held through downloads
        fetched, fetched_bytes = await self._acquire(key, new.plan, log)
        snapshot_id = await self.publication.publish(key, new, log)
        return ArchResult(
            key,
            Outcome.PUBLISHED,
            packages=len(new.plan.files),
            fetched=fetched,
            fetched_bytes=fetched_bytes,
            snapshot_id=snapshot_id,
        )

    async def load_status(self, key: ArchKey) -> None:
        """What we publish for ``key``, from the database (at start-up, before any poll)."""
        await self._current_snapshot(key)

    async def _current_snapshot(self, key: ArchKey) -> Snapshot | None:
        current = await self.db.call(self.db.current, str(key))
        if current is None:
            return None
        if self.book[key].published_sha256 is None:  # first look since start-up
            self.publication.note_served_at_start(key, *current)
        return current[0]

    async def _poll(
        self, key: ArchKey, snapshot: Snapshot | None, log: FilteringBoundLogger
    ) -> IndexResult:
        """The origin's index, conditional on what we publish (when the tree is intact)."""
        config = self.live.config

        def note_retry(attempt: int, error: BaseException, wait: float) -> None:
            self.metrics.retries.labels(reason=retry_reason(error)).inc()
            self.book.note_retry(key)
            log.info("sync.index.retry", attempt=attempt, error=str(error), wait=round(wait, 3))

        try:
            response = await call_with_retries(
                lambda: self.origin.fetch_index(
                    key,
                    etag=snapshot.etag if snapshot else None,
                    last_modified=snapshot.last_modified_header if snapshot else None,
                    max_bytes=config.limits.max_index_bytes,
                    now=self.clock.time(),
                ),
                config.fetch,
                self.clock,
                self.rng,
                note_retry,
            )
        except OriginError:
            self.book.note_poll(key, "failed", self.clock.time())
            raise
        self._note_response(key, response, snapshot)
        return response

    async def probe(self, key: ArchKey) -> None:
        """Look at the origin's index for lag alone (a held or paused arch): no publish.

        Conditional on what we saw last time, so an origin that has not moved
        answers 304; one attempt, since the next probe comes at the next poll.
        """
        if self.busy(key):
            return
        snapshot = await self._current_snapshot(key)
        seen = self.book[key].origin_seen
        etag, last_modified = (
            (seen.etag, seen.last_modified)
            if seen
            else (snapshot.etag, snapshot.last_modified_header)
            if snapshot
            else (None, None)
        )
        try:
            response = await self.origin.fetch_index(
                key,
                etag=etag,
                last_modified=last_modified,
                max_bytes=self.live.config.limits.max_index_bytes,
                now=self.clock.time(),
            )
        except OriginError as error:
            self.book.note_poll(key, "failed", self.clock.time())
            self.log.debug("sync.probe.failed", arch=str(key), error=str(error))
            return
        self._note_response(key, response, None if seen else snapshot)

    def _note_response(
        self, key: ArchKey, response: IndexResult, asked_with: Snapshot | None
    ) -> None:
        """Record what the origin serves: a 304 means what we asked about."""
        now = self.clock.time()
        if response.body is None:
            self.book.note_poll(key, "not_modified", now)
            if asked_with is not None:
                seen = OriginSeen(
                    asked_with.etag,
                    asked_with.last_modified_header,
                    asked_with.index_sha256,
                    asked_with.last_modified,
                )
                self.book.note_origin(key, seen, now)
            return
        self.book.note_poll(key, "modified", now)
        seen = OriginSeen(
            response.etag,
            response.last_modified,
            hashlib.sha256(response.body).hexdigest(),
            response.last_modified_ts,
        )
        self.book.note_origin(key, seen, now)

    async def _new_index(
        self, key: ArchKey, response: IndexResult, snapshot: Snapshot | None, trusted: bool
    ) -> bytes | None:
        """The new index's bytes, or None when an intact tree already serves them."""
        if response.body is None:
            assert snapshot is not None
            return None
        seen = self.book[key].origin_seen
        assert seen is not None
        if (
            snapshot is not None
            and trusted
            and _recorded_whole(snapshot)
            and snapshot.index_sha256 == seen.sha256
        ):
            # The same bytes under new validators: nothing to publish.
            await self.db.call(
                self.db.update_validators, snapshot.id, response.etag, response.last_modified
            )
            return None
        return response.body

    def _refuse_going_back(self, key: ArchKey, snapshot: Snapshot | None, force: bool) -> None:
        """Raise OlderIndexError for an index older than the published one, unless forced."""
        if force or snapshot is None or self.live.config.publish.older_index == "publish":
            return
        seen = self.book[key].origin_seen
        assert seen is not None  # the poll that brought the index noted it
        if seen.sha256 == snapshot.index_sha256:
            return  # the published bytes under an older date: a tree to repair, not a step back
        origin_mtime = seen.mtime
        if goes_back(origin_mtime, snapshot.last_modified, snapshot.created_at):
            assert origin_mtime is not None and snapshot.last_modified is not None
            self.metrics.older_index_refusals.labels(**Metrics.labels(key)).inc()
            raise OlderIndexError(str(key), origin_mtime, snapshot.last_modified)

    async def _plan(
        self,
        key: ArchKey,
        response: IndexResult,
        body: bytes,
        snapshot: Snapshot | None,
        *,
        force: bool,
        trusted: bool,
        log: FilteringBoundLogger,
    ) -> NewIndex:
        """Verify the index and decide the publish before a byte is fetched.

        A mass deletion is refused here, and what is left to do after the
        downloads does not grow with the arch. One arch plans at a time (its
        index is the memory peak); entries are packed into the plan's file
        table as they are parsed, and the inflated text, the previous file
        list and the store lookup die with this frame: only the plan stays.
        """
        config = self.live.config
        async with self._store_gate:
            previous = await self.db.call(self.db.snapshot_files, snapshot.id) if snapshot else None
            # An intact tree's unchanged files take their digests from the snapshot
            # it serves; a tree to repair looks every package up in the store.
            intact = trusted and snapshot is not None and _recorded_whole(snapshot)
            signer, description, listing = await self._verify_index(
                key, body, previous if intact else None
            )
            listed, unchanged = len(listing.files), listing.unchanged
            for batch in listing.waiting.batches(LOOKUP_BATCH):
                listing.fill(await self.db.call(self.db.lookup, batch))
            plan = plan_listing(
                key,
                listing,
                previous,
                max_delete_fraction=config.publish.max_delete_fraction,
                force=force,
                relink_all=not trusted,
            )
            del listing, previous
            seen = self.book[key].origin_seen
            assert seen is not None  # the poll that brought ``body`` noted its digest
            new = NewIndex(
                replace(response, body=None),
                len(body),
                description,
                plan,
                force,
                seen.sha256,
            )
            self._syncing[key] = new  # pinned: garbage collection keeps what it lists
        log.info(
            "sync.arch.planned",
            packages=listed,
            stored=listed - len(plan.waiting),
            unchanged=unchanged,
            missing=len(plan.waiting),
            signer=signer,
        )
        return new

    async def _verify_index(
        self, key: ArchKey, body: bytes, previous: FileTable | None
    ) -> tuple[str | None, str, Listing]:
        """The index's signer, description and files; its entries never all exist at once."""
        config = self.live.config

        def verify_and_list() -> tuple[str | None, str, Listing]:
            index = open_index_archive(
                body,
                self.live.keyring,
                allow_untrusted=config.origin.allow_untrusted,
                max_index_bytes=config.limits.max_index_bytes,
                max_package_bytes=config.limits.max_package_bytes,
            )
            return index.signer, index.description, list_files(index.entries(key.arch), previous)

        try:
            return await asyncio.to_thread(verify_and_list)
        except IndexRejectedError as error:
            reason = (
                "signature"
                if isinstance(error, SignatureError)
                else "unsafe_index"
                if isinstance(error, UnsafeIndexError)
                else "index_format"
            )
            self.metrics.verification_failures.labels(reason=reason).inc()
            raise

    async def _acquire(
        self, key: ArchKey, plan: PublishPlan, log: FilteringBoundLogger
    ) -> tuple[int, int]:
        """Store every package the plan waits for; returns how many were downloaded, and bytes."""
        tree = self.publisher.arch_dir(key)
        # A ref per waiting package (~200 bytes each) only when there is a tree to seed
        # from: a new arch's would be held while it waits its turn at the store gate.
        missing = plan.missing() if tree.is_dir() else []
        seeded = await seed_from_tree(tree, missing, self.publisher.store, self.committer)
        plan.fill(seeded)
        if seeded:
            log.info("sync.arch.seeded", packages=len(seeded), source="published tree")
        async with self._store_gate:  # other arches may have stored some since we planned
            for batch in plan.waiting.batches(LOOKUP_BATCH):
                plan.fill(await self.db.call(self.db.lookup, batch))
        # Entry numbers (4 bytes each): the plan builds each ref when it is fetched.
        to_fetch = plan.waiting.snapshot()
        plan.waiting.drop_lookups()  # downloads go by entry, not by identity
        del missing, seeded
        fetched, fetched_bytes = len(to_fetch), plan.waiting.bytes_waiting()
        await self._check_space(key, fetched_bytes)
        grace = self.live.config.fetch.missing_grace
        deadline = self.clock.monotonic() + grace
        wait = min(MISSING_FIRST_WAIT, grace / 10)
        while True:
            failures, first, not_found = await self._fetch_all(key, to_fetch, plan)
            if first is None:
                break
            if not isinstance(first, MirrordError):
                raise first
            left = deadline - self.clock.monotonic()
            if not_found < failures or left <= 0:
                if not_found == failures and grace > 0:
                    raise DownloadsFailedError(
                        str(key),
                        failures,
                        fetched,
                        first,
                        note=f"still missing at the origin after fetch.missing_grace ({grace:g} s)",
                    )
                raise DownloadsFailedError(str(key), failures, fetched, first)
            # The origin's index came before its packages: ask again soon, keep serving
            # the previous snapshot meanwhile.
            to_fetch = plan.waiting.snapshot()
            log.info(
                "sync.arch.waiting_for_origin",
                missing=len(to_fetch),
                first=plan.ref_entry(to_fetch[0]).filename if to_fetch else None,
                wait=round(min(wait, left), 3),
                grace_left=round(left, 1),
            )
            await self.clock.sleep(min(wait, left))
            wait = min(wait * 2, MISSING_MAX_WAIT)
        assert plan.complete
        return fetched, fetched_bytes

    async def _check_space(self, key: ArchKey, needed: int) -> None:
        """Refuse, before a byte is fetched, a pass whose downloads cannot fit."""
        storage = self.live.config.storage
        # Inline: one statvfs is a metadata call, and a thread hop here would let a
        # big arch's downloads run ahead of a small arch that is about to start.
        free = free_bytes(storage.path)
        self.metrics.disk_free.set(free)
        others = self.book.still_to_download(but=key)
        if shortfall(needed, free, storage.min_free, others):
            self.metrics.disk_refusals.labels(**Metrics.labels(key)).inc()
            raise DiskSpaceError(str(storage.path), needed, free, storage.min_free, others)

    async def _fetch_all(
        self, key: ArchKey, entries: Sequence[int], plan: PublishPlan
    ) -> tuple[int, BaseException | None, int]:
        """Fetch these waiting entries (``Waiting.snapshot``), a window queued at a time.

        The window keeps memory flat for a 100,000-package arch (no future per
        package up front) while keeping enough queued for the round-robin
        between arches. Returns (failures, first failure, how many of the failures
        were "not found" at the origin); the plan fills in.
        """
        if self._fetch_slots is None:
            window = max(FETCH_WINDOW, 4 * self.live.config.fetch.concurrency)
            self._fetch_slots = asyncio.Semaphore(window)
        slots = self._fetch_slots
        all_done = asyncio.Event()
        outstanding = 1  # 1 until every ref is submitted
        failures = 0
        not_found = 0
        first: BaseException | None = None
        planned_bytes = sum(map(plan.waiting.size, entries))  # progress, for the status page
        self.book.note_downloads_planned(key, len(entries), planned_bytes, self.clock.monotonic())

        def settle() -> None:
            nonlocal outstanding
            outstanding -= 1
            if outstanding == 0:
                all_done.set()

        def stored(entry: int, future: asyncio.Future[str]) -> None:
            nonlocal failures, first, not_found
            slots.release()
            error = future.exception()
            if error is None:
                size = plan.waiting.size(entry)  # read first: the last fill frees the columns
                plan.fill_entry(entry, future.result())
                self.book.note_download_done(key, size)
            else:
                failures += 1
                first = first or error
                if isinstance(error, PermanentOriginError) and error.status in (404, 410):
                    not_found += 1
                self.book.note_download_failed(key)
            settle()

        # One context for every callback: a copy per download in flight costs ~100 bytes.
        context = contextvars.copy_context()
        for entry in entries:
            await slots.acquire()
            outstanding += 1
            done = self.fetcher.fetch(key, plan.ref_entry(entry))
            done.add_done_callback(functools.partial(stored, entry), context=context)
        settle()  # every ref submitted
        await all_done.wait()
        return failures, first, not_found

    async def rollback(self, key: ArchKey, snapshot_id: int) -> Snapshot:
        """Publish an earlier snapshot again, once no sync of the arch is running."""
        async with self._lock(key):
            return await self.publication.rollback(key, snapshot_id)

    # --- garbage -------------------------------------------------------------------

    async def collect_garbage(self) -> GarbageReport:
        """Delete objects no snapshot and no arch being synced needs; (objects, bytes)."""
        async with self._store_gate:
            with self.committer.settlement.at_risk("garbage collection"):
                result = await collect_garbage(
                    self.publisher.store,
                    self.db,
                    clock=self.clock,
                    grace=self.live.config.publish.grace,
                    log=self.log,
                    in_use=self._in_use,
                )
            self.fetcher.forget_recent()  # what it remembers as stored may be gone
        await self.count_store()
        return result

    def _in_use(self) -> InUse:
        digests = {new.index_sha256 for new in self._syncing.values()} | set(self.also_in_use())
        identities: set[tuple[str, int]] = set()
        for new in self._syncing.values():
            digests.update(new.plan.files.digests())
            identities.update(new.plan.waiting)
        return InUse(digests, identities)

    async def count_store(self, *, after_change: bool = True) -> None:
        await self.publication.count_store(after_change=after_change)


def _log_result(
    log: FilteringBoundLogger, result: ArchResult, retries: int, *, quiet_unchanged: bool
) -> None:
    fields = {
        "outcome": str(result.outcome),
        "packages": result.packages,
        "fetched": result.fetched,
        "fetched_bytes": result.fetched_bytes,
        "seconds": round(result.seconds, 3),
        "snapshot": result.snapshot_id,
        "error": result.error,
        "retries": retries,  # each attempt is logged at debug level as fetch.package.retry
    }
    if result.outcome is Outcome.UNCHANGED and quiet_unchanged:
        log.debug("sync.arch.done", **fields)
    elif result.ok:
        log.info("sync.arch.done", **fields)
    elif result.outcome is Outcome.INTERRUPTED:
        log.info("sync.arch.interrupted", **fields)
    else:
        log.error("sync.arch.failed", **fields)


def _recorded_whole(snapshot: Snapshot) -> bool:
    """Does the record know every file's bytes? (an adopted snapshot may not)"""
    return snapshot.status != "adopted"
