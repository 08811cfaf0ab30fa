"""Store maintenance an operator starts: scrub (verify) and garbage collection.

Scrub re-reads every stored object against its digest, in the background,
reporting progress; with ``repair`` a damaged object is removed and forgotten,
so the next pass fetches it again and re-links the arches that publish it.
GC deletes objects no remembered snapshot needs, once they are older than the
grace period (so nothing a pass is still assembling can go).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.apkpackage import PackageDigester
from mirrord.core.clock import Clock
from mirrord.core.errors import PackageFormatError
from mirrord.core.objectkey import SHARDS, is_package_key
from mirrord.storage.durable import hash_file
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore


@dataclass
class ScrubProgress:
    running: bool = False
    repair: bool = False
    total: int = 0
    checked: int = 0
    database: list[str] | None = None  # what PRAGMA quick_check found; None: not yet run
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    repaired: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set when it ends, even failed

    def summary(self) -> dict[str, object]:
        return {
            "running": self.running,
            "repair": self.repair,
            "database": None if self.database is None else "; ".join(self.database) or "ok",
            "total": self.total,
            "checked": self.checked,
            "damaged": len(self.damaged),
            "missing": len(self.missing),
            "repaired": self.repaired,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def rehash(store: ContentStore, key: str) -> str | None:
    """The key of the object's actual bytes, computed as its kind is named; None when it is
    gone, ``unreadable: why`` when it cannot be read (EIO, a directory in its place) or
    parsed as the package its key says it is: damaged either way, never a crash."""
    path = store.object_path(key)
    try:
        if is_package_key(key):
            digester = PackageDigester(key)
            hash_file(path, digester.feed)
            return digester.finish().key
        digest = hashlib.sha256()
        hash_file(path, digest.update)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"unreadable: {error.strerror}"
    except PackageFormatError as error:
        return f"unreadable: {error}"
    return digest.hexdigest()


async def _recorded_digests(db: StateDB) -> AsyncIterator[str]:
    """Every recorded key in order, one fan-out directory's share at a time."""
    for prefix in SHARDS:
        for sha256 in sorted(await db.call(db.object_digests, prefix)):
            yield sha256


async def scrub(
    store: ContentStore,
    db: StateDB,
    progress: ScrubProgress,
    *,
    clock: Clock,
    log: FilteringBoundLogger,
    on_bad: Callable[[str], None] = lambda _kind: None,
) -> list[str]:
    """Check every object; returns the digests that were damaged or missing.

    ``on_bad(kind)`` hears of each one as it is found ("damaged" or "missing").
    At the end, one log line per bad object names the published files it is.
    """
    progress.started_at = clock.time()
    progress.database = problems = await db.call(db.problems)
    if problems:  # told, and the objects checked all the same: their files are what matters
        log.error(
            "maintenance.scrub.database_damaged",
            problems=problems[:10],
            fix="stop mirrord and run 'mirrord recover'",
        )
    progress.total, _ = await db.call(db.object_stats)
    log.info("maintenance.scrub.started", objects=progress.total, repair=progress.repair)
    async for sha256 in _recorded_digests(db):
        actual = await asyncio.to_thread(rehash, store, sha256)
        progress.checked += 1
        if actual == sha256:
            continue
        kind = "missing" if actual is None else "damaged"
        (progress.missing if actual is None else progress.damaged).append(sha256)
        on_bad(kind)
        log.error("maintenance.scrub.bad_object", sha256=sha256, actual=actual, kind=kind)
        if progress.repair:
            await asyncio.to_thread(store.remove, sha256)
            await db.call(db.forget_objects, [sha256])
            progress.repaired += 1
    progress.finished_at = clock.time()
    bad = progress.damaged + progress.missing
    if bad:  # one pass over the published snapshots, for all of them at once
        names = await db.call(db.published_names, set(bad))
        for sha256 in bad:
            published = names.get(sha256, [])
            log.error(
                "maintenance.scrub.damage",
                sha256=sha256,
                files=published[:10],
                more_files=max(0, len(published) - 10),
                arches=sorted({name.rsplit("/", 1)[0] for name in published}),
                repaired=progress.repair,
            )
    log.info(
        "maintenance.scrub.done",
        checked=progress.checked,
        damaged=len(progress.damaged),
        missing=len(progress.missing),
        repaired=progress.repaired,
    )
    return bad


@dataclass(frozen=True)
class InUse:
    """What syncs in progress need that no snapshot lists yet."""

    digests: AbstractSet[str] = frozenset()  # objects a plan will publish
    identities: AbstractSet[tuple[str, int]] = frozenset()  # (C:, S:) a plan still waits for


def collectable(
    unlisted: Iterable[tuple[str, int, str | None]], in_use: InUse
) -> list[tuple[str, int]]:
    """Of the old objects no snapshot lists, those no sync in progress needs either."""
    return [
        (sha, size)
        for sha, size, checksum in unlisted
        if sha not in in_use.digests and (checksum, size) not in in_use.identities
    ]


@dataclass(frozen=True)
class GarbageReport:
    deleted: int  # objects
    freed: int  # bytes
    listed: int  # objects kept: a remembered snapshot lists them
    recent: int  # objects kept: stored less than publish.grace ago
    in_use: int  # objects kept: a sync in progress will publish them


async def collect_garbage(
    store: ContentStore,
    db: StateDB,
    *,
    clock: Clock,
    grace: float,
    log: FilteringBoundLogger,
    in_use: Callable[[], InUse] = InUse,
) -> GarbageReport:
    """Delete unneeded objects older than ``grace``; say what was kept and why.

    ``in_use`` is asked after the database has been read: an object stored
    meanwhile is either still awaited by its identity or already in a plan.
    """
    candidates = await db.call(db.garbage_candidates, clock.time() - grace)
    doomed = collectable(candidates.unlisted, in_use())
    for sha256, _size in doomed:
        await asyncio.to_thread(store.remove, sha256)
    await db.call(db.forget_objects, [sha for sha, _ in doomed])
    total, _ = await db.call(db.object_stats)
    report = GarbageReport(
        deleted=len(doomed),
        freed=sum(size for _, size in doomed),
        listed=candidates.listed,
        recent=total - (candidates.old - len(doomed)),
        in_use=candidates.old - len(doomed) - candidates.listed,
    )
    log.info(
        "maintenance.gc.done",
        objects=report.deleted,
        bytes=report.freed,
        kept_listed=report.listed,
        kept_recent=report.recent,
        kept_in_use=report.in_use,
    )
    return report
