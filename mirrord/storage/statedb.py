"""The embedded state database (SQLite, WAL): what is stored, what was published.

Methods are blocking and run on one dedicated thread through ``call``, so the
event loop never waits on SQLite and the connection is never shared.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from mirrord.core.errors import StateDamagedError, StoreError
from mirrord.core.model import PublishedFile
from mirrord.storage.filetable import FileTable

P = ParamSpec("P")
R = TypeVar("R")

# 2: the store's totals kept in store_totals; 3: file lists in columns, in their own table
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    checksum TEXT,
    stored_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_identity ON objects (checksum, size);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arch TEXT NOT NULL,
    created_at REAL NOT NULL,
    index_sha256 TEXT NOT NULL,
    index_size INTEGER NOT NULL,
    last_modified REAL,
    etag TEXT,
    last_modified_header TEXT,
    description TEXT NOT NULL DEFAULT '',
    packages INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    status TEXT NOT NULL,
    forced INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_arch ON snapshots (arch, id);
CREATE TABLE IF NOT EXISTS snapshot_files (
    snapshot_id INTEGER PRIMARY KEY,
    files BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS snapshot_files_removed AFTER DELETE ON snapshots BEGIN
    DELETE FROM snapshot_files WHERE snapshot_id = OLD.id;
END;
CREATE TABLE IF NOT EXISTS current (
    arch TEXT PRIMARY KEY,
    snapshot_id INTEGER NOT NULL,
    published_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_deletions (
    arch TEXT NOT NULL,
    filename TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (arch, filename)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    objects INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS store_totals_added AFTER INSERT ON objects BEGIN
    UPDATE store_totals SET objects = objects + 1, bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS store_totals_removed AFTER DELETE ON objects BEGIN
    UPDATE store_totals SET objects = objects - 1, bytes = bytes - OLD.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS store_totals_resized AFTER UPDATE OF size ON objects BEGIN
    UPDATE store_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
"""

# Schemas 1 and 2 kept each file list in its snapshot's row: a change of status
# (published, then superseded) rewrote the whole list (~4 MB at 100,000 files).
_MOVE_FILE_LISTS = """
INSERT INTO snapshot_files (snapshot_id, files) SELECT id, files FROM snapshots;
ALTER TABLE snapshots DROP COLUMN files;
"""

# Counted once, when a database without kept totals is opened (a new one, or schema 1);
# from then on the triggers keep them in the transaction that adds or removes an object,
# so a start reads one row instead of counting millions.
_COUNT_TOTALS = """
INSERT OR REPLACE INTO store_totals (id, objects, bytes)
    SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM objects;
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: int
    arch: str
    created_at: float
    index_sha256: str
    index_size: int
    last_modified: float | None
    etag: str | None
    last_modified_header: str | None
    description: str
    packages: int
    bytes: int
    status: str
    forced: bool


def encode_files(files: Sequence[PublishedFile]) -> bytes:
    return (files if isinstance(files, FileTable) else FileTable(files)).encode()


def decode_files(blob: bytes) -> FileTable:
    """A snapshot's file list; ValueError when its record is damaged."""
    if FileTable.is_record(blob):
        return FileTable.decode(blob)
    # Text rows, as mirrord wrote them before the columns (one line per file).
    text = zlib.decompress(blob).decode()
    table = FileTable()
    for line in text.split("\n"):
        if line:
            name, sha256, size, package = line.split("\t")
            table.append(name, sha256, int(size), package)
    return table


def decode_digests(blob: bytes) -> list[str]:
    """Only the digests of a file list (those known: a pending file has none)."""
    return list(decode_files(blob).digests())


_SNAPSHOT_COLUMNS = (
    "id, arch, created_at, index_sha256, index_size, last_modified, etag, "
    "last_modified_header, description, packages, bytes, status, forced"
)
_PREFIXED_COLUMNS = ", ".join(f"s.{c.strip()}" for c in _SNAPSHOT_COLUMNS.split(","))


def _snapshot(row: Sequence[object]) -> Snapshot:
    return Snapshot(
        id=int(row[0]),  # type: ignore[call-overload]
        arch=str(row[1]),
        created_at=float(row[2]),  # type: ignore[arg-type]
        index_sha256=str(row[3]),
        index_size=int(row[4]),  # type: ignore[call-overload]
        last_modified=None if row[5] is None else float(row[5]),  # type: ignore[arg-type]
        etag=None if row[6] is None else str(row[6]),
        last_modified_header=None if row[7] is None else str(row[7]),
        description=str(row[8]),
        packages=int(row[9]),  # type: ignore[call-overload]
        bytes=int(row[10]),  # type: ignore[call-overload]
        status=str(row[11]),
        forced=bool(row[12]),
    )


@dataclass(frozen=True, slots=True)
class GarbageCandidates:
    unlisted: list[tuple[str, int, str | None]]  # old enough, listed by no snapshot
    old: int  # objects stored before the moment
    listed: int  # of those, listed by a remembered snapshot


def sidecars(path: Path) -> list[Path]:
    """SQLite's files beside the database in WAL mode."""
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def database_error(path: Path, error: Exception) -> StoreError:
    """A failed database call as the project's error; a damaged file names the cure."""
    damaged = isinstance(error, sqlite3.DatabaseError) and not isinstance(
        error, sqlite3.OperationalError | sqlite3.IntegrityError
    )
    damaged = damaged or not isinstance(error, sqlite3.Error)  # an unreadable snapshot list
    if damaged:
        return StateDamagedError(str(path), str(error))
    return StoreError(str(path), f"state database: {error}")


def _quick_check(connection: sqlite3.Connection) -> list[str]:
    found = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    return [] if found == ["ok"] else found


class StateDB:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statedb")

    @classmethod
    def open(cls, path: Path, *, check: bool = True) -> StateDB:
        """Open (creating or upgrading) the database; ``check``: ``PRAGMA quick_check`` first.

        The check reads every page (~0.2 s per million objects). A start after a
        trusted clean stop opens the very file this mirrord closed, and skips it;
        ``mirrord ctl verify`` runs it (``problems``).
        """
        if not path.exists():  # a journal left by a deleted database must not be replayed
            for stale in sidecars(path):
                stale.unlink(missing_ok=True)
        try:
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=10000")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    str(path),
                    f"state database schema {version} is newer than this mirrord "
                    f"({SCHEMA_VERSION})",
                )
            if version < SCHEMA_VERSION:
                columns = {row[1] for row in connection.execute("PRAGMA table_info(snapshots)")}
                move = _MOVE_FILE_LISTS if "files" in columns else ""
                connection.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA} {move} {_COUNT_TOTALS} "
                    f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            if check:
                problems = _quick_check(connection)
                if problems:
                    raise StateDamagedError(str(path), "; ".join(problems[:3]))
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):
                raise StoreError(str(path), f"cannot open the state database: {error}") from None
            raise StateDamagedError(str(path), str(error)) from None
        return cls(connection, path)

    def problems(self) -> list[str]:
        """What ``PRAGMA quick_check`` finds wrong with the file (none: an empty list)."""
        try:
            return _quick_check(self._db)
        except sqlite3.DatabaseError as error:
            return [str(error)]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Every statement inside commits together, or none does. The connection is in
        autocommit mode (``isolation_level=None``), where ``with connection`` alone
        begins nothing: each statement, and each row of an ``executemany``, would
        commit by itself, and a kill between two of them would keep the first."""
        with self._db:
            self._db.execute("BEGIN")
            yield

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn`` on the database's thread; SQLite's errors become StoreError here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._mapped(fn, args, kwargs))

    def _mapped(
        self, fn: Callable[..., R], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> R:
        try:
            return fn(*args, **kwargs)
        except (sqlite3.Error, zlib.error, UnicodeDecodeError, ValueError) as error:
            raise database_error(self.path, error) from None

    # --- objects ---------------------------------------------------------------

    def record_objects(self, rows: Sequence[tuple[str, int, str | None]], now: float) -> None:
        """Record durable objects (sha256, size, C: or None) in one statement.

        One statement, not executemany: the sqlite3 module releases the GIL
        around every step, and thousands of tiny releases stall the event loop.
        """
        payload = json.dumps(rows, separators=(",", ":"))
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO objects (sha256, size, checksum, stored_at) "
                "SELECT value ->> 0, value ->> 1, value ->> 2, ? FROM json_each(?)",
                (now, payload),
            )

    def garbage_candidates(self, moment: float) -> GarbageCandidates:
        """Objects stored before ``moment`` that no remembered snapshot needs (its files and its
        index), with how many old objects there are and how many of them are listed.

        The listed digests go into a temporary table one snapshot at a time and
        the comparison is one query: at two million objects, a Python set of
        every digest and a list of every old object took over a gigabyte. The
        table is indexed once, after the last row: inserting two million digests
        in random order into a keyed table cost 3-4 times the CPU of appending
        them and sorting once (and grew worse than linearly).
        """
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS referenced (sha256 TEXT)")
        try:
            with self._transaction():  # the temporary rows are never journalled one by one
                ids = [int(row[0]) for row in self._db.execute("SELECT id FROM snapshots")]
                for snapshot_id in ids:
                    index_sha256, blob = self._db.execute(
                        "SELECT s.index_sha256, f.files FROM snapshots s "
                        "LEFT JOIN snapshot_files f ON f.snapshot_id = s.id WHERE s.id = ?",
                        (snapshot_id,),
                    ).fetchone()
                    if blob is None:  # what it lists is unknown: nothing may be collected
                        raise StateDamagedError(
                            str(self.path), f"snapshot {snapshot_id} has no file list"
                        )
                    digests = [index_sha256, *decode_digests(blob)]
                    self._db.execute(
                        "INSERT INTO temp.referenced SELECT value FROM json_each(?)",
                        (json.dumps(digests),),
                    )
                self._db.execute("CREATE INDEX temp.referenced_sha256 ON referenced (sha256)")
                unlisted = [
                    (str(sha), int(size), checksum)
                    for sha, size, checksum in self._db.execute(
                        "SELECT sha256, size, checksum FROM objects WHERE stored_at < ? "
                        "AND sha256 NOT IN (SELECT sha256 FROM temp.referenced)",
                        (moment,),
                    )
                ]
                (old,) = self._db.execute(
                    "SELECT COUNT(*) FROM objects WHERE stored_at < ?", (moment,)
                ).fetchone()
        finally:
            self._db.execute("DROP TABLE IF EXISTS temp.referenced")
        return GarbageCandidates(unlisted, int(old), int(old) - len(unlisted))

    def object_digests(self, prefix: str) -> set[str]:
        """The recorded keys of one fan-out directory (``prefix``: "ab" or "apk:ab").

        No plain key starts with "ap" + a non-hex letter, so the kinds' ranges
        never overlap.
        """
        rows = self._db.execute(  # hex digits sort below "g": the range is the prefix
            "SELECT sha256 FROM objects WHERE sha256 >= ? AND sha256 < ?", (prefix, prefix + "g")
        )
        return {row[0] for row in rows}

    def forget_objects(self, shas: Sequence[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM objects WHERE sha256 = ?", [(s,) for s in shas])

    def lookup(self, identities: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """Stored objects by the index identity (C:, S:)."""
        found: dict[tuple[str, int], str] = {}
        wanted = set(identities)
        checksums = sorted({c for c, _ in wanted})
        for start in range(0, len(checksums), 500):
            batch = checksums[start : start + 500]
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(
                f"SELECT checksum, size, sha256 FROM objects "  # noqa: S608 - only placeholders
                f"WHERE checksum IN ({marks})",
                batch,
            )
            for checksum, size, sha256 in rows:
                if (checksum, size) in wanted:
                    found[(checksum, size)] = sha256
        return found

    def object_stats(self) -> tuple[int, int]:
        """How many objects the store records, and their bytes (kept: one row, not a count)."""
        row = self._db.execute("SELECT objects, bytes FROM store_totals WHERE id = 0").fetchone()
        return int(row[0]), int(row[1])

    # --- operator settings that outlive a restart (e.g. a rate override) --------

    def setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str | None) -> None:
        """Remember ``value`` under ``name`` (None forgets it)."""
        with self._transaction():
            if value is None:
                self._db.execute("DELETE FROM settings WHERE name = ?", (name,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value)
                )

    # --- snapshots -------------------------------------------------------------

    def add_snapshot(
        self,
        arch: str,
        *,
        created_at: float,
        index_sha256: str,
        index_size: int,
        last_modified: float | None,
        etag: str | None,
        last_modified_header: str | None,
        description: str,
        files: Sequence[PublishedFile],
        status: str,
        forced: bool = False,
    ) -> int:
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO snapshots (arch, created_at, index_sha256, index_size, last_modified, "
                "etag, last_modified_header, description, packages, bytes, status, forced) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    arch,
                    created_at,
                    index_sha256,
                    index_size,
                    last_modified,
                    etag,
                    last_modified_header,
                    description,
                    len(files),
                    files.bytes if isinstance(files, FileTable) else sum(f.size for f in files),
                    status,
                    int(forced),
                ),
            )
            self._db.execute(
                "INSERT INTO snapshot_files (snapshot_id, files) VALUES (?, ?)",
                (cursor.lastrowid, encode_files(files)),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def set_current(self, arch: str, snapshot_id: int, published_at: float) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE snapshots SET status = 'superseded' "
                "WHERE arch = ? AND status IN ('published', 'adopted') AND id != ?",
                (arch, snapshot_id),
            )
            self._db.execute(
                "UPDATE snapshots SET status = 'published' WHERE id = ? AND status != 'adopted'",
                (snapshot_id,),
            )
            self._db.execute(
                "INSERT INTO current (arch, snapshot_id, published_at) VALUES (?, ?, ?) "
                "ON CONFLICT (arch) DO UPDATE SET snapshot_id = excluded.snapshot_id, "
                "published_at = excluded.published_at",
                (arch, snapshot_id, published_at),
            )

    def current(self, arch: str) -> tuple[Snapshot, float] | None:
        row = self._db.execute(
            f"SELECT {_PREFIXED_COLUMNS}, c.published_at FROM current c "  # noqa: S608
            "JOIN snapshots s ON s.id = c.snapshot_id WHERE c.arch = ?",
            (arch,),
        ).fetchone()
        if row is None:
            return None
        return _snapshot(row[:-1]), float(row[-1])

    def unpublished(self, arches: Sequence[str]) -> int:
        """How many of these arches have nothing published yet (a first sync ahead)."""
        published = {str(row[0]) for row in self._db.execute("SELECT arch FROM current")}
        return sum(arch not in published for arch in arches)

    def snapshot(self, snapshot_id: int) -> Snapshot | None:
        row = self._db.execute(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?",  # noqa: S608
            (snapshot_id,),
        ).fetchone()
        return None if row is None else _snapshot(row)

    def snapshot_files(self, snapshot_id: int) -> FileTable:
        row = self._db.execute(
            "SELECT files FROM snapshot_files WHERE snapshot_id = ?", (snapshot_id,)
        ).fetchone()
        if row is None:
            raise StoreError(str(self.path), f"no snapshot {snapshot_id}")
        return self._files(row[0], snapshot_id)

    def _files(self, blob: bytes, snapshot_id: int) -> FileTable:
        try:
            return decode_files(blob)
        except (ValueError, zlib.error) as error:
            raise StateDamagedError(
                str(self.path), f"snapshot {snapshot_id}'s file list: {error}"
            ) from None

    def snapshots(self, arch: str) -> list[Snapshot]:
        rows = self._db.execute(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE arch = ? ORDER BY id DESC",  # noqa: S608
            (arch,),
        )
        return [_snapshot(r) for r in rows]

    def published_names(self, digests: AbstractSet[str]) -> dict[str, list[str]]:
        """Which published files (``arch/filename``) each of these objects is, right now."""
        names: dict[str, list[str]] = {}
        rows = self._db.execute(
            "SELECT c.arch, s.index_sha256, f.files FROM current c "
            "JOIN snapshots s ON s.id = c.snapshot_id "
            "JOIN snapshot_files f ON f.snapshot_id = s.id"
        )
        for arch, index_sha256, blob in rows:
            if index_sha256 in digests:
                names.setdefault(index_sha256, []).append(f"{arch}/APKINDEX.tar.gz")
            files = decode_files(blob)
            for position in files.positions_of(digests):
                names.setdefault(files.digest(position), []).append(
                    f"{arch}/{files.filename(position)}"
                )
        return names

    def find_snapshot_by_index(self, arch: str, index_sha256: str) -> Snapshot | None:
        row = self._db.execute(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots "  # noqa: S608
            "WHERE arch = ? AND index_sha256 = ? ORDER BY id DESC LIMIT 1",
            (arch, index_sha256),
        ).fetchone()
        return None if row is None else _snapshot(row)

    def update_validators(
        self, snapshot_id: int, etag: str | None, last_modified: str | None
    ) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE snapshots SET etag = ?, last_modified_header = ? WHERE id = ?",
                (etag, last_modified, snapshot_id),
            )

    def abandon_pending(self, arch: str) -> int:
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE snapshots SET status = 'abandoned' WHERE arch = ? AND status = 'pending'",
                (arch,),
            )
        return cursor.rowcount

    def prune_snapshots(self, arch: str, keep: int) -> int:
        """Forget all but the newest ``keep`` published/superseded snapshots (never the current)."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM snapshots WHERE arch = ? AND id NOT IN ("
                "  SELECT id FROM snapshots"
                "  WHERE arch = ? AND status IN ('published', 'superseded', 'adopted')"
                "  ORDER BY id DESC LIMIT ?"
                ") AND id NOT IN (SELECT snapshot_id FROM current WHERE arch = ?)",
                (arch, arch, keep, arch),
            )
        return cursor.rowcount

    # --- deletions after the grace period ---------------------------------------

    def schedule_deletions(self, arch: str, filenames: Iterable[str], since: float) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO pending_deletions (arch, filename, since) VALUES (?, ?, ?)",
                [(arch, name, since) for name in filenames],
            )

    def cancel_deletions(self, arch: str, filenames: Iterable[str]) -> None:
        with self._transaction():
            self._db.executemany(
                "DELETE FROM pending_deletions WHERE arch = ? AND filename = ?",
                [(arch, name) for name in filenames],
            )

    def pending_deletions(self, arch: str) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT filename, since FROM pending_deletions WHERE arch = ?", (arch,)
        )
        return {name: float(since) for name, since in rows}
