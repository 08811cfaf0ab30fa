"""The clean-stop marker: after a clean exit, start-up need not compare the store with state.db.

Start-up recovery lists every fan-out directory of ``objects/`` against the
recorded digests, because a crash can leave an object renamed but never
recorded, or a record whose removal was cut short: at two million objects that
listing, and each arch's tree against its snapshot, are most of the start-up. A
process that exits cleanly (every placed
object recorded, no removal cut short: see ``Settlement``) writes
``<storage>/clean-stop`` durably after the database is closed, naming the
state.db file it vouches for, the ``objects/`` directory it agrees with and the
arches whose published trees it left consistent.
The next start takes it away durably before any work, so a crash at any later
instant leaves no marker, and trusts it only when both still are the same
files (a database restored from a backup, or a marker copied in from another
store, does not match). Objects an operator deletes by hand while mirrord is
stopped are not noticed by a start after a clean stop: ``mirrord ctl verify``
finds them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrord.storage.durable import fsync_dir, write_atomic

MARKER = "clean-stop"
VERSION = 1


class Settlement:
    """Whether this process may have left the store and state.db disagreeing.

    ``broken`` names the first reason (an object placed but never recorded, a
    removal cut short between the file and its record); once set, the exit is
    not clean and the next start compares everything.
    """

    def __init__(self) -> None:
        self.broken: str | None = None

    def spoil(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason

    @contextlib.contextmanager
    def at_risk(self, what: str) -> Iterator[None]:
        """Work that leaves the two disagreeing if it stops half-way (error or cancel)."""
        try:
            yield
        except BaseException:
            self.spoil(f"{what} stopped half-way")
            raise


def identity(storage: Path, database: Path) -> dict[str, Any]:
    """What a marker vouches for: the database file as closed, and this store's objects."""

    def stat(path: Path) -> list[int] | None:
        try:
            found = path.stat()
        except FileNotFoundError:
            return None
        return [found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns]

    objects = stat(storage / "objects")
    return {
        "version": VERSION,
        "database": stat(database),
        "wal": stat(database.with_name(database.name + "-wal")),
        "objects": objects[:2] if objects else None,  # its mtime is not ours to vouch for
    }


def verdict(recorded: object, actual: dict[str, Any]) -> str | None:
    """None when the marker vouches for these files; else why it cannot (pure)."""
    if not isinstance(recorded, dict):
        return "unreadable"
    if recorded.get("version") != VERSION:
        return "another version"
    if actual["database"] is None:
        return "no state database"
    for part in ("database", "wal", "objects"):
        if recorded.get(part) != actual[part]:
            return f"{part} changed since the stop"
    return None


@dataclass(frozen=True)
class Taken:
    present: bool
    problem: str | None  # why a present marker is not trusted
    arches: frozenset[str] = frozenset()  # whose published trees agreed with state.db
    published: str | None = None  # the tree they are in

    def consistent_arches(self, published: Path) -> frozenset[str]:
        """The arches whose trees need no check at this start (none unless trusted)."""
        return self.arches if self.trusted and self.published == str(published) else frozenset()

    @property
    def trusted(self) -> bool:
        return self.present and self.problem is None


def take(storage: Path, database: Path) -> Taken:
    """Read the marker and remove it durably (before any work); whether it can be trusted."""
    path = storage / MARKER
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return Taken(present=False, problem=None)
    try:
        recorded: object = json.loads(text)
    except ValueError:
        recorded = None
    path.unlink()
    fsync_dir(storage)
    problem = verdict(recorded, identity(storage, database))
    if problem is not None or not isinstance(recorded, dict):
        return Taken(present=True, problem=problem)
    arches, published = recorded.get("arches"), recorded.get("published")
    return Taken(
        present=True,
        problem=None,
        arches=frozenset(str(a) for a in arches) if isinstance(arches, list) else frozenset(),
        published=published if isinstance(published, str) else None,
    )


def leave(
    storage: Path, database: Path, published: Path, arches: Iterable[str], stopped_at: float
) -> None:
    """Write the marker durably; only after the database is closed (its file is final).

    ``arches``: those whose trees under ``published`` agree with the database now.
    """
    marker = {
        **identity(storage, database),
        "published": str(published),
        "arches": sorted(arches),
        "stopped_at": stopped_at,
        "pid": os.getpid(),
    }
    write_atomic(storage / MARKER, json.dumps(marker).encode())
