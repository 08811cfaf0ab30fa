"""``mirrord recover``: rebuild a lost or damaged state database, downloading nothing.

The damaged file (and its WAL) is moved aside, never deleted: an operator may
want it. A fresh database is then filled the way start-up recovery fills one
after a crash: every object in ``objects/`` is re-read and recorded under its
digest (with its C: when it is a package), and every arch's published index is
adopted as the current snapshot, its files found in the store by (C:, size).
The next pass plans against that, so nothing stored is fetched again, and the
daemon never starts on a database it could only half read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.config import Config
from mirrord.core.errors import StoreError
from mirrord.publish.publisher import Publisher
from mirrord.publish.recovery import RecoveryReport
from mirrord.storage import cleanstop
from mirrord.storage.lock import StorageLock
from mirrord.storage.statedb import StateDB, sidecars
from mirrord.storage.store import ContentStore
from mirrord.sync.runtime import prepare_paths, recover_all


@dataclass(frozen=True)
class Rebuilt:
    kept_aside: list[Path]  # the old database's files, renamed
    objects: int  # objects recorded from the store
    bytes: int
    adopted: int  # arches whose published index became the current snapshot
    report: RecoveryReport


def move_aside(path: Path, stamp: str) -> list[Path]:
    """Rename the database and its WAL files to ``<name>.damaged-<stamp>``."""
    moved: list[Path] = []
    for old in [path, *sidecars(path)]:
        if not old.exists():
            continue
        new = old.with_name(f"{old.name}.damaged-{stamp}")
        try:
            os.rename(old, new)
        except OSError as error:
            raise StoreError(str(old), f"cannot move it aside: {error.strerror}") from None
        moved.append(new)
    return moved


async def rebuild_state(config: Config, *, log: FilteringBoundLogger, clock: Clock) -> Rebuilt:
    """Replace ``state.db`` with one rebuilt from the store and the published tree."""
    prepare_paths(config)
    lock = StorageLock.acquire(config.storage.path)  # the daemon must not be running
    try:
        path = config.storage.path / "state.db"
        cleanstop.take(config.storage.path, path)  # it vouched for the database moved aside
        moved = move_aside(path, f"{int(clock.time())}")
        log.warning("recover.database.moved_aside", files=[str(p) for p in moved])
        db = StateDB.open(path)
        try:
            store = ContentStore(config.storage.path)
            publisher = Publisher(config.publish.path, store)
            report = await recover_all(config, store, db, publisher, clock, log)
            objects, size = await db.call(db.object_stats)
        finally:
            db.close()
    finally:
        lock.release()
    log.info(
        "recover.database.rebuilt",
        objects=objects,
        bytes=size,
        adopted=report.snapshots_adopted,
    )
    return Rebuilt(moved, objects, size, report.snapshots_adopted, report)
