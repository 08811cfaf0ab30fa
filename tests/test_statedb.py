"""The state database keeps each snapshot's file list exactly (rollback relies on it)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import zlib
from pathlib import Path

import pytest

from mirrord.core.errors import StateDamagedError, StoreError
from mirrord.core.model import PublishedFile
from mirrord.storage.statedb import SCHEMA_VERSION, StateDB
from tests.helpers import store_totals
from tests.test_filetable import APK_KEY
from tests.test_filetable import FILES as ODD_FILES


def files(count: int) -> list[PublishedFile]:
    return [
        PublishedFile(
            f"pkg{i}-1.{i}-r0.apk",
            hashlib.sha256(str(i).encode()).hexdigest(),
            1000 + i,
            f"pkg{i}",
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("count", [0, 1, 1000, 3079])
def test_a_snapshot_file_list_round_trips(tmp_path: Path, count: int) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        listed = files(count)
        snapshot_id = _snapshot(db, listed, "0" * 64)
        assert list(db.snapshot_files(snapshot_id)) == listed
        snapshot = db.snapshot(snapshot_id)
        assert snapshot is not None
        assert (snapshot.packages, snapshot.bytes) == (count, sum(f.size for f in listed))
    finally:
        db.close()


def _snapshot(db: StateDB, listed: list[PublishedFile], index_sha256: str) -> int:
    return db.add_snapshot(
        "v3.20/main/x86_64",
        created_at=1.0,
        index_sha256=index_sha256,
        index_size=10,
        last_modified=None,
        etag=None,
        last_modified_header=None,
        description="test",
        files=listed,
        status="published",
    )


def test_every_kind_of_record_round_trips_and_answers_by_digest(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        snapshot_id = _snapshot(db, ODD_FILES, "0" * 64)
        db.set_current("v3.20/main/x86_64", snapshot_id, 2.0)
        assert list(db.snapshot_files(snapshot_id)) == ODD_FILES
        assert db.snapshot_files(snapshot_id).names() == [f.filename for f in ODD_FILES]
        snapshot = db.snapshot(snapshot_id)
        assert snapshot is not None and snapshot.bytes == sum(f.size for f in ODD_FILES)
        assert db.published_names({APK_KEY, "not-a-key"}) == {
            APK_KEY: ["v3.20/main/x86_64/musl-1.2.5-r0.apk", "v3.20/main/x86_64/empty-1-r0.apk"],
            "not-a-key": ["v3.20/main/x86_64/odd-name.apk"],
        }
    finally:
        db.close()


PLAIN_KEY_UNLISTED = hashlib.sha256(b"listed by no snapshot").hexdigest()


def test_a_schema_2_database_keeps_its_text_row_file_lists(tmp_path: Path) -> None:
    """Lists written before the columns, in the snapshots' rows, move out and read as before."""
    path = tmp_path / "state.db"
    listed = files(5) + ODD_FILES
    rows = "\n".join(f"{f.filename}\t{f.sha256}\t{f.size}\t{f.package}" for f in listed)
    with contextlib.closing(sqlite3.connect(path)) as old:  # what schema 2 wrote
        old.executescript(
            "CREATE TABLE objects (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "checksum TEXT, stored_at REAL NOT NULL) WITHOUT ROWID; "
            "CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, arch TEXT NOT NULL, "
            "created_at REAL NOT NULL, index_sha256 TEXT NOT NULL, index_size INTEGER NOT NULL, "
            "last_modified REAL, etag TEXT, last_modified_header TEXT, "
            "description TEXT NOT NULL DEFAULT '', packages INTEGER NOT NULL, "
            "bytes INTEGER NOT NULL, files BLOB NOT NULL, status TEXT NOT NULL, "
            "forced INTEGER NOT NULL DEFAULT 0); PRAGMA user_version=2;"
        )
        old.execute(
            "INSERT INTO snapshots (arch, created_at, index_sha256, index_size, packages, bytes, "
            "files, status) VALUES ('v3.20/main/x86_64', 1.0, ?, 10, 11, 0, ?, 'published')",
            ("0" * 64, zlib.compress(rows.encode(), 1)),
        )
        old.commit()
    db = StateDB.open(path)
    try:
        assert list(db.snapshot_files(1)) == listed
        db.record_objects([(f.sha256, f.size, None) for f in listed[:3]], now=1.0)
        db.record_objects([(PLAIN_KEY_UNLISTED, 1, None)], now=1.0)
        found = db.garbage_candidates(10.0)
        assert (found.old, found.listed, found.unlisted) == (4, 3, [(PLAIN_KEY_UNLISTED, 1, None)])
        newer = _snapshot(db, listed, "1" * 64)  # in columns, beside the old one
        assert list(db.snapshot_files(newer)) == listed
        assert db.prune_snapshots("v3.20/main/x86_64", 1) == 1  # its list goes with it
        assert db._db.execute("SELECT snapshot_id FROM snapshot_files").fetchall() == [(newer,)]
        columns = [row[1] for row in db._db.execute("PRAGMA table_info(snapshots)")]
        assert "files" not in columns
    finally:
        db.close()


@pytest.mark.parametrize("damage", ["digest byte", "compressed byte", "truncated"])
def test_a_damaged_file_list_is_a_damaged_state_not_a_wrong_one(
    tmp_path: Path, damage: str
) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        snapshot_id = _snapshot(db, files(50) + ODD_FILES, "0" * 64)
        (blob,) = db._db.execute(
            "SELECT files FROM snapshot_files WHERE snapshot_id = ?", (snapshot_id,)
        ).fetchone()
        record = bytearray(blob)
        if damage == "digest byte":
            record[-200] ^= 0x01  # among the digests, which are not compressed
        elif damage == "compressed byte":
            record[40] ^= 0x01
        else:
            del record[len(record) // 2 :]
        with db._db:
            db._db.execute(
                "UPDATE snapshot_files SET files = ? WHERE snapshot_id = ?",
                (bytes(record), snapshot_id),
            )
        with pytest.raises(StateDamagedError, match=f"snapshot {snapshot_id}'s file list"):
            db.snapshot_files(snapshot_id)
    finally:
        db.close()


def test_garbage_candidates_are_the_old_objects_no_snapshot_lists(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        stored = files(40)
        index = hashlib.sha256(b"index").hexdigest()
        db.record_objects([(f.sha256, f.size, f"Q1{f.package}") for f in stored[:30]], now=100.0)
        db.record_objects([(index, 10, None)], now=100.0)
        db.record_objects([(f.sha256, f.size, None) for f in stored[30:]], now=300.0)  # recent
        pending = PublishedFile("waiting-1.0-r0.apk", "", 5, "waiting")  # still being fetched
        _snapshot(db, [*stored[:10], pending], index)
        _snapshot(db, stored[5:20], index)  # listed twice: counted once

        found = db.garbage_candidates(200.0)

        assert (found.old, found.listed) == (31, 21)  # 30 packages + the index; 20 + the index
        assert sorted(found.unlisted) == sorted(
            (f.sha256, f.size, f"Q1{f.package}") for f in stored[20:30]
        )
        again = db.garbage_candidates(200.0)  # the temporary table leaves nothing behind
        assert again == found
    finally:
        db.close()


def test_object_digests_by_fan_out_directory(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        stored = files(300)
        db.record_objects([(f.sha256, f.size, None) for f in stored], now=1.0)
        by_prefix = {prefix: db.object_digests(prefix) for prefix in {f.sha256[:2] for f in stored}}
        assert set().union(*by_prefix.values()) == {f.sha256 for f in stored}
        assert all(all(s.startswith(p) for s in found) for p, found in by_prefix.items())
        assert db.object_digests("zz") == set()
    finally:
        db.close()


def test_the_kept_store_totals_follow_every_add_and_removal(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        stored = files(50)
        assert db.object_stats() == (0, 0)
        db.record_objects([(f.sha256, f.size, None) for f in stored[:30]], now=1.0)
        db.record_objects([(f.sha256, f.size, None) for f in stored[20:]], now=2.0)  # 10 again
        assert db.object_stats() == (50, sum(f.size for f in stored))
        db.forget_objects([f.sha256 for f in stored[:15]] + ["not-stored"])  # what GC does
        assert db.object_stats() == (35, sum(f.size for f in stored[15:]))
    finally:
        db.close()
    kept, counted = store_totals(tmp_path / "state.db")
    assert kept == counted == (35, sum(f.size for f in stored[15:]))


def test_a_schema_1_database_gets_its_totals_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    stored = files(20)
    with contextlib.closing(sqlite3.connect(path)) as old:  # what schema 1 wrote
        old.executescript(
            "CREATE TABLE objects (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "checksum TEXT, stored_at REAL NOT NULL) WITHOUT ROWID; PRAGMA user_version=1;"
        )
        old.executemany(
            "INSERT INTO objects VALUES (?, ?, NULL, 1.0)", [(f.sha256, f.size) for f in stored]
        )
        old.commit()
    db = StateDB.open(path)
    try:
        assert db.object_stats() == (20, sum(f.size for f in stored))
        db.forget_objects([stored[0].sha256])
    finally:
        db.close()
    with contextlib.closing(sqlite3.connect(path)) as upgraded:
        assert upgraded.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reopened = StateDB.open(path)  # not counted again: the kept row is what it reads
    try:
        assert reopened.object_stats() == (19, sum(f.size for f in stored[1:]))
    finally:
        reopened.close()


def test_a_database_from_a_newer_mirrord_is_refused_not_misread(tmp_path: Path) -> None:
    """A downgrade after file lists changed format stops with a clear error."""
    path = tmp_path / "state.db"
    StateDB.open(path).close()
    with contextlib.closing(sqlite3.connect(path)) as newer:
        newer.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1} is newer than this"):
        StateDB.open(path)


def test_garbage_collection_refuses_a_snapshot_without_its_list(tmp_path: Path) -> None:
    """Objects a snapshot lists must never look unreferenced because its list went missing."""
    db = StateDB.open(tmp_path / "state.db")
    try:
        stored = files(3)
        db.record_objects([(f.sha256, f.size, None) for f in stored], now=1.0)
        snapshot_id = _snapshot(db, stored, "0" * 64)
        with db._db:
            db._db.execute("DELETE FROM snapshot_files WHERE snapshot_id = ?", (snapshot_id,))
        with pytest.raises(StateDamagedError, match=f"snapshot {snapshot_id} has no file list"):
            db.garbage_candidates(10.0)
    finally:
        db.close()


def test_a_snapshot_and_its_file_list_are_recorded_together_or_not_at_all(
    tmp_path: Path,
) -> None:
    """Two rows, one transaction: the connection is in autocommit mode, where each
    statement would commit alone and a kill between them (another arch reaching a crash
    point) left a snapshot without its list. Here the second insert fails instead."""
    db = StateDB.open(tmp_path / "state.db")
    try:
        first = _snapshot(db, files(2), "1" * 64)
        db._db.execute(  # an orphan list where the next snapshot's would go
            "INSERT INTO snapshot_files (snapshot_id, files) VALUES (?, x'00')", (first + 1,)
        )
        with pytest.raises(sqlite3.IntegrityError):
            _snapshot(db, files(3), "2" * 64)
        ids = [row[0] for row in db._db.execute("SELECT id FROM snapshots")]
        assert ids == [first]
    finally:
        db.close()
