"""Start-up recovery: after a crash at any instant, make store, database and tree agree.

* temp files in the store and the published tree are swept;
* objects whose landing was recorded but not confirmed durable are re-hashed:
  kept (and made durable) when intact, forgotten otherwise;
* an index renamed into place just before a crash is matched to its pending
  snapshot; one the database does not know is adopted as the baseline, so the
  mass-deletion guard keeps working;
* published package files that no index lists are scheduled for deletion
  after the grace period.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.apkindex import IndexEntry, parse_entries, split_gzip_streams
from mirrord.alpine.tarlite import TarFormatError, iter_members
from mirrord.core.clock import Clock
from mirrord.core.errors import IndexRejectedError
from mirrord.core.model import ArchKey, PublishedFile
from mirrord.core.objectkey import SHARDS
from mirrord.publish.publisher import Publisher
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore


@dataclass
class RecoveryReport:
    store_temps: int = 0
    tree_temps: int = 0
    objects_kept: int = 0
    objects_dropped: int = 0
    objects_missing: int = 0
    snapshots_completed: int = 0
    snapshots_adopted: int = 0
    files_scheduled: int = 0


def published_entries(
    index: bytes, max_bytes: int, max_package_bytes: int
) -> tuple[IndexEntry, ...]:
    """Entries of an index already being served, signature not checked (it is a baseline)."""
    streams = split_gzip_streams(index, max_bytes)
    for stream in reversed(streams):
        try:
            for member in iter_members(stream.data):
                if member.name == "APKINDEX":
                    end = member.start + len(member.data)
                    return parse_entries(stream.data, max_package_bytes, member.start, end)
        except TarFormatError:
            continue
    return ()


async def recover_store(
    store: ContentStore,
    db: StateDB,
    clock: Clock,
    log: FilteringBoundLogger,
    report: RecoveryReport,
) -> None:
    """Make the objects table and ``objects/`` agree.

    Objects on disk but not recorded (the process died between their rename
    and the group commit) are re-read: kept and recorded when intact, removed
    otherwise. Records whose file is gone are forgotten, so the next pass
    fetches them again instead of publishing a link to nothing.
    """
    report.store_temps = await asyncio.to_thread(store.prepare)
    rows: list[tuple[str, int, str | None]] = []
    missing: list[str] = []
    for shard in SHARDS:  # one directory at a time: never a set of every key
        on_disk = await asyncio.to_thread(store.object_names, shard)
        known = await db.call(db.object_digests, shard)
        for sha256 in sorted(on_disk - known):
            described = await asyncio.to_thread(store.describe_object, sha256)
            if described is not None and described[0] == sha256:
                rows.append((sha256, described[1], described[2]))
            else:
                await asyncio.to_thread(store.remove, sha256)
                report.objects_dropped += 1
        missing.extend(sorted(known - on_disk))
    if rows:
        await asyncio.to_thread(store.sync)
        await db.call(db.record_objects, rows, clock.time())
    if missing:
        await db.call(db.forget_objects, missing)
    report.objects_kept, report.objects_missing = len(rows), len(missing)
    if report.store_temps or rows or missing or report.objects_dropped:
        log.info(
            "recovery.store.done",
            temps_swept=report.store_temps,
            objects_recovered=len(rows),
            objects_dropped=report.objects_dropped,
            objects_missing=len(missing),
        )


async def recover_arch(
    key: ArchKey,
    *,
    db: StateDB,
    publisher: Publisher,
    clock: Clock,
    log: FilteringBoundLogger,
    report: RecoveryReport,
    max_index_bytes: int,
    max_package_bytes: int,
) -> None:
    arch = str(key)
    report.tree_temps += await asyncio.to_thread(publisher.sweep, key)
    index = await asyncio.to_thread(publisher.index_bytes, key)
    current = await db.call(db.current, arch)
    if index is not None:
        digest = hashlib.sha256(index).hexdigest()
        if current is None or current[0].index_sha256 != digest:
            snapshot = await db.call(db.find_snapshot_by_index, arch, digest)
            if snapshot is not None:
                await db.call(db.set_current, arch, snapshot.id, clock.time())
                report.snapshots_completed += 1
                log.info("recovery.snapshot.completed", arch=arch, snapshot=snapshot.id)
            else:
                await _adopt(key, index, digest, db, clock, log, max_index_bytes, max_package_bytes)
                report.snapshots_adopted += 1
    await db.call(db.abandon_pending, arch)
    current = await db.call(db.current, arch)
    listed = set((await db.call(db.snapshot_files, current[0].id)).names()) if current else set()
    on_disk = await asyncio.to_thread(publisher.package_files, key)
    pending = await db.call(db.pending_deletions, arch)
    strays = sorted(on_disk - listed - set(pending))
    if strays:
        await db.call(db.schedule_deletions, arch, strays, clock.time())
        report.files_scheduled += len(strays)
        log.info("recovery.files.scheduled", arch=arch, files=len(strays))


async def _adopt(
    key: ArchKey,
    index: bytes,
    digest: str,
    db: StateDB,
    clock: Clock,
    log: FilteringBoundLogger,
    max_index_bytes: int,
    max_package_bytes: int,
) -> None:
    arch = str(key)
    try:
        entries = await asyncio.to_thread(
            published_entries, index, max_index_bytes, max_package_bytes
        )
    except IndexRejectedError as error:
        log.warning("recovery.index.unreadable", arch=arch, error=str(error))
        entries = ()
    known = await db.call(db.lookup, [(e.checksum, e.size) for e in entries])
    files = [
        PublishedFile(e.filename, known.get((e.checksum, e.size), ""), e.size, e.name)
        for e in entries
    ]
    snapshot_id = await db.call(
        db.add_snapshot,
        arch,
        created_at=clock.time(),
        index_sha256=digest,
        index_size=len(index),
        last_modified=None,
        etag=None,
        last_modified_header=None,
        description="adopted from the published tree",
        files=files,
        status="adopted",
    )
    await db.call(db.set_current, arch, snapshot_id, clock.time())
    log.warning(
        "recovery.snapshot.adopted",
        arch=arch,
        snapshot=snapshot_id,
        packages=len(files),
        note="the published index was not in the state database; it is the baseline now",
    )
