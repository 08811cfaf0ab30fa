"""CPU of a snapshot's file list through one incremental publish (issue 15's incremental pass).

``python -m benchmarks.snapshotprobe [packages] [changes]`` (default 100,000 and
100): an arch of that many packages is published, then ``changes`` of them are
rebuilt (a new file name and key each). Prints CPU ms, best of 5 (process time),
of each step of the incremental publish that touches the whole file list, the
way the engine and the publication call them:

- ``read previous``: ``StateDB.snapshot_files`` of the published snapshot;
- ``plan``: ``plan_listing`` of the new listing against it (all stored);
- ``record``: ``StateDB.add_snapshot`` of the plan's files;
- ``make current``: ``StateDB.set_current`` of the new snapshot (the previous one superseded);
- ``expire``: the file names ``Publication.expire`` compares the pending deletions with;
- ``gc digests``: the digests garbage collection reads from one snapshot;
- ``published names``: ``StateDB.published_names`` of one digest (``mirrord ctl`` queries).

With ``PYTHONPATH`` at another checkout it measures that checkout.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from benchmarks.planprobe import KEY, checksum, entries
from mirrord.alpine.apkindex import IndexEntry
from mirrord.core.model import PublishedFile
from mirrord.publish import plan as plan_module
from mirrord.storage.statedb import StateDB, decode_digests

ROUNDS = 5
T = TypeVar("T")


def package_key(i: int) -> str:
    return "apk:" + hashlib.sha256(str(i).encode()).hexdigest()


def best_ms(step: Callable[[T], object], prepare: Callable[[], T]) -> float:
    """The step's least CPU time over the rounds; ``prepare`` makes its argument, untimed."""
    best = float("inf")
    for _ in range(ROUNDS):
        argument = prepare()
        started = time.process_time()
        step(argument)
        best = min(best, time.process_time() - started)
    return best * 1000


def nothing() -> None:
    return None


def listed_names(db: StateDB, snapshot_id: int) -> set[str]:
    """What ``Publication.expire`` reads, the way this checkout reads it."""
    files = db.snapshot_files(snapshot_id)
    names = getattr(files, "names", None)
    return set(names()) if names is not None else {f.filename for f in files}


def stored_list(db: StateDB, snapshot_id: int) -> bytes:
    """A snapshot's stored file list, as garbage collection reads it (schema 3, then before)."""
    for query in (
        "SELECT files FROM snapshot_files WHERE snapshot_id = ?",
        "SELECT files FROM snapshots WHERE id = ?",
    ):
        try:
            return bytes(db._db.execute(query, (snapshot_id,)).fetchone()[0])
        except sqlite3.OperationalError:  # no such table: an older checkout
            continue
    raise LookupError(snapshot_id)


def superseding(db: StateDB, current: int, files: Sequence[PublishedFile]) -> int:
    """A new snapshot recorded while ``current`` is the one published (untimed set-up)."""
    db.set_current(str(KEY), current, 0.0)
    return record(db, files)


def record(db: StateDB, files: Sequence[PublishedFile]) -> int:
    """A published snapshot of these files, as ``Publication.publish`` records one."""
    return db.add_snapshot(
        str(KEY),
        created_at=0.0,
        index_sha256="0" * 64,
        index_size=1,
        last_modified=None,
        etag=None,
        last_modified_header=None,
        description="",
        files=files,
        status="published",
    )


def main(count: int, changes: int) -> None:
    before = entries(count)
    known = {(e.checksum, e.size): package_key(i) for i, e in enumerate(before)}
    after = list(before)
    step = count // changes
    for j in range(changes):
        i = j * step
        old = before[i]
        after[i] = IndexEntry(old.name, old.version + "-rebuilt", checksum(count + i), old.size)
        known[(after[i].checksum, after[i].size)] = package_key(count + i)

    def listing(listed: list[IndexEntry]) -> plan_module.Listing:
        made = plan_module.list_files(listed)
        made.fill(known)
        return made

    first = plan_module.plan_listing(
        KEY, listing(before), None, max_delete_fraction=0.5, force=False
    )
    with tempfile.TemporaryDirectory() as directory:
        db = StateDB.open(Path(directory) / "state.db")
        try:
            published = record(db, first.files)
            previous = db.snapshot_files(published)
            plan = plan_module.plan_listing(
                KEY, listing(after), previous, max_delete_fraction=0.5, force=False
            )
            assert len(plan.unlisted) == changes, len(plan.unlisted)

            blob = stored_list(db, published)
            db.set_current(str(KEY), published, 0.0)
            figures = {
                "read previous": best_ms(lambda _: db.snapshot_files(published), nothing),
                "plan": best_ms(
                    lambda made: plan_module.plan_listing(
                        KEY, made, previous, max_delete_fraction=0.5, force=False
                    ),
                    lambda: listing(after),
                ),
                "record": best_ms(lambda _: record(db, plan.files), nothing),
                "make current": best_ms(
                    lambda new: db.set_current(str(KEY), new, 1.0),
                    lambda: superseding(db, published, plan.files),
                ),
                "expire": best_ms(lambda _: listed_names(db, published), nothing),
                "gc digests": best_ms(lambda _: decode_digests(blob), nothing),
                "published names": best_ms(lambda _: db.published_names({package_key(7)}), nothing),
            }
        finally:
            db.close()
    print(f"{count:,} packages, {changes} changed; CPU ms, best of {ROUNDS}; blob {len(blob):,} B")
    for name, ms in figures.items():
        print(f"  {name:16} {ms:9.1f}")
    print(f"  {'sum':16} {sum(figures.values()):9.1f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
