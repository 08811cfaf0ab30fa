"""The coordinator: one pass polls, verifies, plans, fetches and publishes each arch.

Arches run side by side and each publishes as soon as its own packages are
stored. Errors stay inside their arch: the result says what failed and the
last good snapshot keeps being served.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.apkindex import IndexArchive, read_index_archive
from mirrord.alpine.signing import Keyring
from mirrord.core.clock import Clock
from mirrord.core.config import Config
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import (
    ControlError,
    IndexRejectedError,
    MassDeletionError,
    MirrordError,
    OriginError,
    PublishError,
    SignatureError,
    UnsafeIndexError,
)
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey, PackageRef
from mirrord.fetch.fetcher import Fetcher
from mirrord.fetch.origin import IndexResult, OriginClient
from mirrord.fetch.retry import call_with_retries, retry_reason
from mirrord.fetch.seed import seed_from_tree
from mirrord.publish.plan import PublishPlan, due_deletions, plan_fetch, plan_publish, plan_rollback
from mirrord.publish.publisher import INDEX_NAME, Publisher
from mirrord.storage.committer import Committer
from mirrord.storage.statedb import Snapshot, StateDB

OUTCOMES = ("published", "unchanged", "failed", "refused")
FETCH_WINDOW = 4096


@dataclass(frozen=True)
class ArchResult:
    key: ArchKey
    outcome: str  # one of OUTCOMES
    packages: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0
    snapshot_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("published", "unchanged")


@dataclass
class _FetchOutcome:
    outstanding: int = 0
    failures: int = 0
    first: BaseException | None = None


@dataclass
class ArchState:
    """What the daemon knows about one arch between passes (for status and metrics)."""

    last_result: ArchResult | None = None
    origin_last_modified: float | None = None
    published_last_modified: float | None = None
    behind_since: float | None = None  # when the origin first had what we have not published
    last_success: float | None = None
    last_error: str | None = None
    index_stat: tuple[int, int] | None = None  # (size, mtime_ns) of our published index
    relink: bool = False  # the tree may be damaged: link every file again at the next publish


class ArchFailed(MirrordError):
    pass


@dataclass
class SyncEngine:
    config: Config
    keyring: Keyring
    origin: OriginClient
    fetcher: Fetcher
    committer: Committer
    publisher: Publisher
    db: StateDB
    clock: Clock
    log: FilteringBoundLogger
    metrics: Metrics
    crash: CrashPoints = field(default_factory=CrashPoints)
    rng: random.Random = field(default_factory=random.Random)
    states: dict[ArchKey, ArchState] = field(default_factory=dict)
    _locks: dict[ArchKey, asyncio.Lock] = field(default_factory=dict)
    _planning: asyncio.Lock = field(default_factory=asyncio.Lock)

    def state(self, key: ArchKey) -> ArchState:
        return self.states.setdefault(key, ArchState())

    async def run_pass(
        self, keys: Sequence[ArchKey] | None = None, force: frozenset[ArchKey] = frozenset()
    ) -> list[ArchResult]:
        chosen = list(keys) if keys is not None else self.config.arch_keys()
        started = self.clock.monotonic()
        self.fetcher.forget_recent()  # objects may have gone since (gc, verify --repair)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self.sync_arch(key, force=key in force), name=f"sync {key}")
                for key in chosen
            ]
        self.metrics.pass_duration.observe(self.clock.monotonic() - started)
        return [task.result() for task in tasks]

    async def sync_arch(self, key: ArchKey, *, force: bool = False) -> ArchResult:
        """Bring one arch up to date; never raises a MirrordError (it becomes the result)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            started = self.clock.monotonic()
            log = self.log.bind(arch=str(key))
            labels = self.metrics.labels(key)
            state = self.state(key)
            try:
                result = await self._sync(key, force, log)
            except MassDeletionError as error:
                result = ArchResult(key, "refused", error=str(error))
            except MirrordError as error:
                result = ArchResult(key, "failed", error=str(error))
            except Exception as error:  # a bug must fail this arch's pass, not the daemon
                log.exception("sync.arch.crashed")
                result = ArchResult(key, "failed", error=f"internal error: {error!r}")
            result = _with_seconds(result, self.clock.monotonic() - started)
            state.last_result = result
            if result.ok:
                state.last_success = self.clock.time()
                state.last_error = None
                self.metrics.last_success.labels(**labels).set(state.last_success)
            else:
                state.last_error = result.error
                if result.outcome == "refused":
                    self.metrics.publishes.labels(**labels, outcome="refused").inc()
            self.metrics.arch_failing.labels(**labels).set(0 if result.ok else 1)
            event = "sync.arch.done" if result.ok else "sync.arch.failed"
            (log.info if result.ok else log.error)(
                event,
                outcome=result.outcome,
                packages=result.packages,
                fetched=result.fetched,
                fetched_bytes=result.fetched_bytes,
                seconds=round(result.seconds, 3),
                snapshot=result.snapshot_id,
                error=result.error,
            )
            return result

    # --- one arch -------------------------------------------------------------------

    async def _sync(self, key: ArchKey, force: bool, log: FilteringBoundLogger) -> ArchResult:
        arch = str(key)
        labels = self.metrics.labels(key)
        state = self.state(key)
        current = await self.db.call(self.db.current, arch)
        snapshot = current[0] if current else None
        trusted = (
            snapshot is not None
            and not state.relink
            and await self._published_index_intact(key, snapshot)
        )

        def note_retry(attempt: int, error: BaseException, wait: float) -> None:
            self.metrics.retries.labels(reason=retry_reason(error)).inc()
            log.info("sync.index.retry", attempt=attempt, error=str(error), wait=round(wait, 3))

        try:
            response = await call_with_retries(
                lambda: self.origin.fetch_index(
                    key,
                    etag=snapshot.etag if trusted and snapshot else None,
                    last_modified=snapshot.last_modified_header if trusted and snapshot else None,
                    max_bytes=self.config.limits.max_index_bytes,
                    now=self.clock.time(),
                ),
                self.config.fetch,
                self.clock,
                self.rng,
                note_retry,
            )
        except OriginError:
            self.metrics.index_polls.labels(**labels, result="failed").inc()
            raise
        if response.body is None:
            assert snapshot is not None
            self.metrics.index_polls.labels(**labels, result="not_modified").inc()
            self._note_current(key, snapshot)
            await self.expire(key)
            return ArchResult(key, "unchanged", packages=snapshot.packages, snapshot_id=snapshot.id)
        self.metrics.index_polls.labels(**labels, result="modified").inc()
        origin_modified = response.last_modified_ts
        state.origin_last_modified = origin_modified
        if origin_modified is not None:
            self.metrics.origin_last_modified.labels(**labels).set(origin_modified)

        index_sha256 = hashlib.sha256(response.body).hexdigest()
        complete = snapshot is not None and snapshot.status != "adopted"
        if snapshot is not None and trusted and complete and snapshot.index_sha256 == index_sha256:
            # The same bytes under new validators: nothing to publish.
            await self.db.call(
                self.db.update_validators, snapshot.id, response.etag, response.last_modified
            )
            self._note_current(key, snapshot)
            await self.expire(key)
            return ArchResult(key, "unchanged", packages=snapshot.packages, snapshot_id=snapshot.id)
        if state.behind_since is None:
            now = self.clock.time()  # an origin clock ahead of ours must not hide the lag
            state.behind_since = min(origin_modified, now) if origin_modified else now

        async with self._planning:  # one arch at a time: its planning data is the peak
            plan, missing, description = await self._plan(
                key, response, snapshot, force, trusted, log
            )
        index_object = await self.committer.commit_bytes(response.body)
        seeded = await seed_from_tree(
            self.publisher.arch_dir(key), missing, self.publisher.store, self.committer
        )
        plan.fill(seeded)
        if seeded:
            log.info("sync.arch.seeded", packages=len(seeded), source="published tree")
        # Other arches may have stored some of these since this arch planned.
        remaining = [ref for ref in missing if ref.identity not in seeded]
        landed = await self.db.call(self.db.lookup, [ref.identity for ref in remaining])
        plan.fill(landed)
        to_fetch = [ref for ref in remaining if ref.identity not in landed]
        del missing, remaining, seeded, landed
        failures, first = await self._fetch_all(key, to_fetch, plan)
        if first is not None:
            if not isinstance(first, MirrordError):
                raise first
            raise ArchFailed(f"{failures} of {len(to_fetch)} packages failed; first: {first}")
        assert plan.complete
        return await self._publish(
            key,
            response,
            description,
            plan,
            index_object,
            force=force,
            log=log,
            fetched=(len(to_fetch), sum(ref.size for ref in to_fetch)),
        )

    async def _plan(
        self,
        key: ArchKey,
        response: IndexResult,
        snapshot: Snapshot | None,
        force: bool,
        trusted: bool,
        log: FilteringBoundLogger,
    ) -> tuple[PublishPlan, tuple[PackageRef, ...], str]:
        """Verify the index and decide the publish before a byte is fetched.

        A mass deletion is refused here, and what is left to do after the
        downloads does not grow with the arch. The parsed entries, the previous
        file list and the store lookup die with this frame: during the
        downloads only the plan stays in memory.
        """
        archive = await self._verify_index(key, response)
        known = await self.db.call(self.db.lookup, [(e.checksum, e.size) for e in archive.entries])
        previous = await self.db.call(self.db.snapshot_files, snapshot.id) if snapshot else None
        plan = plan_publish(
            key,
            archive.entries,
            known,
            previous,
            max_delete_fraction=self.config.publish.max_delete_fraction,
            force=force,
            relink_all=not trusted,
        )
        missing = plan_fetch(archive.entries, known)
        log.info(
            "sync.arch.planned",
            packages=len(archive.entries),
            stored=len(archive.entries) - len(missing),
            missing=len(missing),
            signer=archive.signer,
        )
        return plan, missing, archive.description

    async def _fetch_all(
        self, key: ArchKey, refs: Sequence[PackageRef], plan: PublishPlan
    ) -> tuple[int, BaseException | None]:
        """Fetch ``refs`` through the shared pool, at most WINDOW queued at a time.

        The window keeps memory flat for a 100,000-package arch (no future per
        package up front) while keeping enough queued for the round-robin
        between arches. Returns (failures, first failure); the plan fills in.
        """
        slots = asyncio.Semaphore(max(FETCH_WINDOW, 4 * self.config.fetch.concurrency))
        all_done = asyncio.Event()
        outcome = _FetchOutcome(outstanding=1)  # 1 until every ref is submitted

        def settle() -> None:
            outcome.outstanding -= 1
            if outcome.outstanding == 0:
                all_done.set()

        def landed(ref: PackageRef, future: asyncio.Future[str]) -> None:
            slots.release()
            error = future.exception()
            if error is None:
                plan.fill_one(ref.identity, future.result())
            else:
                outcome.failures += 1
                outcome.first = outcome.first or error
            settle()

        for ref in refs:
            await slots.acquire()
            outcome.outstanding += 1
            self.fetcher.fetch(key, ref).add_done_callback(functools.partial(landed, ref))
        settle()  # every ref submitted
        await all_done.wait()
        return outcome.failures, outcome.first

    async def _verify_index(self, key: ArchKey, response: IndexResult) -> IndexArchive:
        assert response.body is not None
        try:
            return await asyncio.to_thread(
                read_index_archive,
                response.body,
                self.keyring,
                allow_untrusted=self.config.origin.allow_untrusted,
                max_index_bytes=self.config.limits.max_index_bytes,
                max_package_bytes=self.config.limits.max_package_bytes,
            )
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

    async def _publish(
        self,
        key: ArchKey,
        response: IndexResult,
        description: str,
        plan: PublishPlan,
        index_sha256: str,
        *,
        force: bool,
        log: FilteringBoundLogger,
        fetched: tuple[int, int],
    ) -> ArchResult:
        """Files first, index last; the snapshot record comes after the index is live.

        Recording the snapshot (a list of every file) costs time in proportion
        to the arch, so it stays off the path to the new index. If the process
        dies in between, recovery adopts the published index as the snapshot.
        """
        assert response.body is not None
        arch = str(key)
        labels = self.metrics.labels(key)
        started = self.clock.monotonic()
        try:
            await asyncio.to_thread(
                self.publisher.publish, key, plan.to_link, response.body, response.last_modified_ts
            )
        except OSError as error:
            self.metrics.publishes.labels(**labels, outcome="failed").inc()
            raise PublishError(
                arch,
                f"cannot write the published tree: {error.strerror or error} ({error.filename})",
            ) from None
        seconds = self.clock.monotonic() - started
        self.metrics.publish_duration.observe(seconds)
        self.metrics.publishes.labels(**labels, outcome="published").inc()
        now = self.clock.time()
        snapshot_id = await self.db.call(
            self.db.add_snapshot,
            arch,
            created_at=now,
            index_sha256=index_sha256,
            index_size=len(response.body),
            last_modified=response.last_modified_ts,
            etag=response.etag,
            last_modified_header=response.last_modified,
            description=description,
            files=plan.files,
            status="published",
            forced=force and bool(plan.dropped_packages),
        )
        await self.db.call(self.db.set_current, arch, snapshot_id, now)
        self.crash.reach("publish.after_record")
        if plan.unlisted:
            await self.db.call(self.db.schedule_deletions, arch, plan.unlisted, now)
        if plan.replaced:
            log.warning(
                "publish.files.replaced",
                count=len(plan.replaced),
                files=list(plan.replaced[:10]),
                note="the origin changed these files' bytes without a new version",
            )
        if force and plan.dropped_packages:
            log.warning("publish.forced", dropped=len(plan.dropped_packages))
        new_snapshot = await self.db.call(self.db.snapshot, snapshot_id)
        assert new_snapshot is not None
        self._note_current(key, new_snapshot)
        self.state(key).behind_since = None
        self.state(key).relink = False
        await self.expire(key)
        await self.db.call(self.db.prune_snapshots, arch, self.config.publish.keep_snapshots)
        log.info(
            "publish.snapshot.done",
            snapshot=snapshot_id,
            packages=len(plan.files),
            linked=len(plan.link),
            unlisted=len(plan.unlisted),
            seconds=round(seconds, 4),
        )
        return ArchResult(
            key,
            "published",
            packages=len(plan.files),
            fetched=fetched[0],
            fetched_bytes=fetched[1],
            snapshot_id=snapshot_id,
        )

    async def rollback(self, key: ArchKey, snapshot_id: int) -> Snapshot:
        """Publish an earlier snapshot again: files first, index last, as always."""
        arch = str(key)
        async with self._locks.setdefault(key, asyncio.Lock()):
            snapshot = await self.db.call(self.db.snapshot, snapshot_id)
            if snapshot is None or snapshot.arch != arch:
                raise ControlError("not_found", f"{arch} has no snapshot {snapshot_id}")
            files = await self.db.call(self.db.snapshot_files, snapshot_id)
            needed = [f.sha256 for f in files if f.sha256] + [snapshot.index_sha256]
            if any(not f.sha256 for f in files) or not all(
                await asyncio.to_thread(lambda: [self.publisher.store.has(s) for s in needed])
            ):
                raise ControlError(
                    "not_found",
                    f"snapshot {snapshot_id} of {arch} is no longer complete in the store "
                    "(garbage-collected or adopted without its bytes)",
                )
            index = await asyncio.to_thread(self.publisher.store.read_bytes, snapshot.index_sha256)
            current = await self.db.call(self.db.current, arch)
            previous = (
                await self.db.call(self.db.snapshot_files, current[0].id) if current else None
            )
            plan = plan_rollback(key, files, previous)
            now = self.clock.time()
            try:
                await asyncio.to_thread(
                    self.publisher.publish, key, plan.to_link, index, snapshot.last_modified
                )
            except OSError as error:
                raise PublishError(arch, f"rollback failed: {error.strerror or error}") from None
            await self.db.call(self.db.set_current, arch, snapshot_id, now)
            if plan.unlisted:
                await self.db.call(self.db.schedule_deletions, arch, plan.unlisted, now)
            self._note_current(key, snapshot)
            self.log.warning(
                "publish.rollback.done", arch=arch, snapshot=snapshot_id, packages=len(files)
            )
            return snapshot

    def _note_current(self, key: ArchKey, snapshot: Snapshot) -> None:
        labels = self.metrics.labels(key)
        state = self.state(key)
        state.published_last_modified = snapshot.last_modified
        if snapshot.last_modified is not None:
            self.metrics.published_last_modified.labels(**labels).set(snapshot.last_modified)
            if (
                state.origin_last_modified is None
                or state.origin_last_modified <= snapshot.last_modified
            ):
                state.origin_last_modified = snapshot.last_modified
                self.metrics.origin_last_modified.labels(**labels).set(snapshot.last_modified)
        state.behind_since = None
        self.metrics.published_packages.labels(**labels).set(snapshot.packages)
        self.metrics.published_bytes.labels(**labels).set(snapshot.bytes)
        path = self.publisher.arch_dir(key) / INDEX_NAME
        try:
            info = os.stat(path)
            state.index_stat = (info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            state.index_stat = None

    async def _published_index_intact(self, key: ArchKey, snapshot: Snapshot) -> bool:
        """Is the index on disk still the one we published? (stat, not a re-hash)"""
        state = self.state(key)
        path = self.publisher.arch_dir(key) / INDEX_NAME
        try:
            info = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return False
        if state.index_stat is None:
            digest = await asyncio.to_thread(self.publisher.index_digest, key)
            if digest != snapshot.index_sha256:
                return False
            state.index_stat = (info.st_size, info.st_mtime_ns)
        return state.index_stat == (info.st_size, info.st_mtime_ns)

    async def expire(self, key: ArchKey) -> list[str]:
        """Delete the files whose grace period is over and that no index lists again."""
        arch = str(key)
        pending = await self.db.call(self.db.pending_deletions, arch)
        if not pending:
            return []
        current = await self.db.call(self.db.current, arch)
        listed = (
            {f.filename for f in await self.db.call(self.db.snapshot_files, current[0].id)}
            if current
            else set()
        )
        due, relisted = due_deletions(
            pending, listed, now=self.clock.time(), grace=self.config.publish.grace
        )
        deleted: list[str] = []
        if due:
            deleted = await asyncio.to_thread(self.publisher.delete, key, due)
            self.metrics.deleted_files.inc(len(deleted))
            self.log.info("publish.files.expired", arch=arch, deleted=len(deleted))
        if due or relisted:
            await self.db.call(self.db.cancel_deletions, arch, due + relisted)
        return deleted


def _with_seconds(result: ArchResult, seconds: float) -> ArchResult:
    return replace(result, seconds=seconds)
