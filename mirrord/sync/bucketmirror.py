"""Mirror each publish of the tree into an S3 bucket, in the same order.

The tree stays the primary publish (nginx serves it); this service follows
the publish feed. For an arch that changed it brings the bucket to the arch's
current snapshot: package objects first, each uploaded and verified by the
size and ETag the store reports, then the index object (one PUT is atomic, so
the index is the pointer), then deletion of keys that neither the index nor
the tree lists any more (the tree keeps unlisted files for ``publish.grace``,
so the bucket does too). It works from the state database, not from the
event, so a dropped event or a crash costs nothing: the next event, or the
start, brings the bucket up to date, and what the bucket already holds with
the right size and ETag is not sent again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from mirrord.core.aio import first_of_group
from mirrord.core.clock import Clock
from mirrord.core.config import S3Config
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import MirrordError, ObjectStoreError
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.publish.bucket import Bucket, expected_etag, load_credentials
from mirrord.publish.bucketplan import Source, plan_bucket, to_compare, unverified
from mirrord.publish.etagcache import FILE_NAME as ETAG_FILE
from mirrord.publish.etagcache import EtagCache
from mirrord.publish.publisher import INDEX_NAME, Publisher
from mirrord.storage.statedb import StateDB
from mirrord.sync.feed import Published, Subscription
from mirrord.sync.runtime import Runtime

RETRY_EVERY = 60.0  # seconds between passes for an arch whose last pass failed


@dataclass(frozen=True)
class BucketSync:
    arch: str
    snapshot: int
    uploaded: int  # objects sent (the index not counted)
    kept: int  # objects the bucket held already with the right size and ETag
    index: bool  # the index object was written
    deleted: int
    parts: int  # multipart parts sent
    parts_reused: int  # parts of an interrupted upload the store held already


@dataclass
class BucketMirror:
    config: S3Config
    bucket: Bucket
    db: StateDB
    publisher: Publisher
    cache: EtagCache
    log: FilteringBoundLogger
    metrics: Metrics
    clock: Clock
    failed: set[str] = field(default_factory=set)  # arches whose last pass failed
    synced: dict[str, int] = field(default_factory=dict)  # arch -> snapshot the bucket serves
    etags: dict[tuple[str, int], str] = field(default_factory=dict)  # (sha256, size) -> ETag
    behind_since: dict[str, float] = field(default_factory=dict)  # arch -> first publish not sent
    last_pass: float | None = None  # when a pass last ended well
    last_failure: str | None = None
    last_failure_at: float | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def lag(self, arch: str, now: float) -> float:
        """How long the bucket has been behind the tree for this arch (0: in step)."""
        since = self.behind_since.get(arch)
        return max(0.0, now - since) if since is not None else 0.0

    def status(self) -> dict[str, object]:
        """The ``bucket`` object of ``ctl status`` (no credentials)."""
        now = self.clock.time()
        return {
            "endpoint": self.config.endpoint,
            "bucket": self.config.bucket,
            "prefix": self.config.prefix,
            "in_step": sum(
                1 for a in self.synced if a not in self.behind_since and a not in self.failed
            ),
            "behind": {arch: self.lag(arch, now) for arch in sorted(self.behind_since)},
            "failed": sorted(self.failed),
            "last_pass": self.last_pass,
            "last_failure": self.last_failure,
            "last_failure_at": self.last_failure_at,
        }

    def prefix(self, key: ArchKey) -> str:
        return f"{self.config.prefix}{key}/"

    async def run(
        self, subscription: Subscription, arch_keys: Callable[[], Iterable[ArchKey]]
    ) -> None:
        """Catch up every arch once, then follow the feed.

        ``arch_keys`` gives the arches configured now (a reload may change them);
        events for other directories of the tree are not the bucket's business.
        An arch whose pass failed is tried again every ``RETRY_EVERY`` seconds
        (an event of its own in the queue), so a quiet arch does not stay behind
        after the store was down.
        """
        async with asyncio.TaskGroup() as group:
            group.create_task(self._retry_failed(subscription))
            pending = {str(k): k for k in arch_keys()}
            while True:
                while pending:
                    _, key = pending.popitem()
                    await self.sync_logged(key)
                events = [await subscription.get(), *subscription.waiting()]
                configured = {str(k): k for k in arch_keys()}
                for event in events:
                    if event.directory in configured:
                        pending[event.directory] = configured[event.directory]
                        self.behind_since.setdefault(event.directory, event.at)

    async def _retry_failed(self, subscription: Subscription) -> None:
        while True:
            await self.clock.sleep(RETRY_EVERY)
            for arch in sorted(self.failed):
                if not subscription.queue.full():
                    subscription.queue.put_nowait(Published(arch, (), self.clock.time()))

    async def wait_synced(self, key: ArchKey, snapshot_id: int) -> None:
        """Until the bucket serves this snapshot of the arch."""
        await self.wait_until(lambda: self.synced.get(str(key)) == snapshot_id)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Until ``condition`` holds, checked after each pass (done or failed)."""
        async with self._changed:
            await self._changed.wait_for(condition)

    async def _passed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def sync_logged(self, key: ArchKey) -> bool:
        """``sync``, its failure logged: is the bucket up to date with the tree?"""
        labels = Metrics.labels(key)
        try:
            await self.sync(key)
        except (MirrordError, OSError) as error:
            self.log.error("bucket.sync.failed", arch=str(key), error=str(error))  # noqa: TRY400
            self.metrics.bucket_syncs.labels(**labels, outcome="failed").inc()
            self.failed.add(str(key))
            self.last_failure, self.last_failure_at = f"{key}: {error}", self.clock.time()
            await self._passed()
            return False
        self.metrics.bucket_syncs.labels(**labels, outcome="done").inc()
        self.last_pass = self.clock.time()
        self.metrics.bucket_last_success.labels(**labels).set(self.last_pass)
        self.failed.discard(str(key))
        self.behind_since.pop(str(key), None)
        await self._passed()
        return True

    async def sync(self, key: ArchKey) -> BucketSync | None:
        """Bring the bucket to the arch's current snapshot; None when nothing is published."""
        arch = str(key)
        current = await self.db.call(self.db.current, arch)
        if current is None:
            return None
        snapshot = current[0]
        files = await self.db.call(self.db.snapshot_files, snapshot.id)
        prefix = self.prefix(key)
        sources = [Source(prefix + f.filename, f.sha256, f.size) for f in files]
        index = Source(prefix + INDEX_NAME, snapshot.index_sha256, snapshot.index_size)
        listing = await self.bucket.listing(prefix)
        paths = {s.key: self._path(key, prefix, s) for s in [*sources, index]}
        etags = {
            s.key: await self._etag(paths[s.key], s) for s in to_compare([*sources, index], listing)
        }
        tree_dir = self.publisher.arch_dir(key)
        in_tree = {prefix + n for n in await asyncio.to_thread(_names, tree_dir)}
        plan = plan_bucket(sources, index, listing, etags, in_tree)
        counts = replace(self.bucket.counts)
        await self._upload(prefix, plan.upload, paths)
        if plan.index is not None:
            body = await asyncio.to_thread(paths[index.key].read_bytes)
            await self.bucket.put_verified(index.key, body)
            self.metrics.bucket_uploaded_bytes.inc(len(body))
        if plan.delete:
            await self.bucket.delete(list(plan.delete))
        result = BucketSync(
            arch,
            snapshot.id,
            uploaded=len(plan.upload),
            kept=len(sources) - len(plan.upload),
            index=plan.index is not None,
            deleted=len(plan.delete),
            parts=self.bucket.counts.parts - counts.parts,
            parts_reused=self.bucket.counts.parts_reused - counts.parts_reused,
        )
        if plan.upload or plan.index is not None or plan.delete:
            self.log.info("bucket.sync.done", **asdict(result))
        self.synced[arch] = snapshot.id
        return result

    async def _upload(self, prefix: str, sources: Sequence[Source], paths: dict[str, Path]) -> None:
        """Upload by ``concurrency`` workers, then check all of it in the store's listing."""
        queue: asyncio.Queue[Source] = asyncio.Queue()
        for source in sources:
            queue.put_nowait(source)
        sent: dict[str, tuple[int, str]] = {}
        with first_of_group(MirrordError, OSError):  # one upload failed: the pass did
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.config.concurrency, len(sources))):
                    group.create_task(self._uploader(queue, paths, sent))
        if not sent:
            return
        remembered = {(s.sha256, s.size): sent[s.key][1] for s in sources if s.sha256}
        self.etags.update(remembered)
        await asyncio.to_thread(self.cache.add, remembered)
        wrong = unverified(sent, await self.bucket.listing(prefix))
        if wrong:
            raise ObjectStoreError(
                wrong[0], f"the store lists {len(wrong)} object(s) unlike what was sent"
            )

    async def _uploader(
        self, queue: asyncio.Queue[Source], paths: dict[str, Path], sent: dict[str, tuple[int, str]]
    ) -> None:
        while not queue.empty():
            source = queue.get_nowait()
            etag = await self.bucket.put_file(source.key, paths[source.key], source.size)
            sent[source.key] = (source.size, etag)
            self.metrics.bucket_uploaded_bytes.inc(source.size)
            self.log.debug("bucket.object.uploaded", key=source.key, size=source.size)

    def _path(self, key: ArchKey, prefix: str, source: Source) -> Path:
        """The stored object (immutable) when known, else the tree's file."""
        if source.sha256:
            return self.publisher.store.object_path(source.sha256)
        return self.publisher.arch_dir(key) / source.key.removeprefix(prefix)

    async def _etag(self, path: Path, source: Source) -> str:
        cache_key = (source.sha256, source.size)
        if source.sha256 and cache_key in self.etags:
            return self.etags[cache_key]
        etag = await asyncio.to_thread(
            expected_etag,
            path,
            source.size,
            self.config.multipart_threshold,
            self.config.part_size,
        )
        if source.sha256:
            self.etags[cache_key] = etag
            await asyncio.to_thread(self.cache.add, {cache_key: etag})
        return etag


@asynccontextmanager
async def open_bucket_mirror(
    runtime: Runtime, config: S3Config, environ: Mapping[str, str], crash: CrashPoints
) -> AsyncIterator[BucketMirror]:
    """The bucket of ``config`` with the runtime's database and tree (credentials read here)."""
    credentials = load_credentials(config, environ)
    cache = EtagCache(runtime.store.root / ETAG_FILE, config.multipart_threshold, config.part_size)
    remembered = await asyncio.to_thread(cache.load)
    async with Bucket.open(config, credentials) as bucket:
        bucket.after_part = lambda: crash.reach("bucket.after_part")
        yield BucketMirror(
            config,
            bucket,
            runtime.db,
            runtime.publisher,
            cache,
            runtime.log,
            runtime.metrics,
            runtime.clock,
            etags=remembered,
        )


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
