"""The state database keeps each snapshot's file list exactly (rollback relies on it)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

import pytest

from mirrord.core.model import PublishedFile
from mirrord.storage.statedb import ENCODE_BATCH, SCHEMA_VERSION, StateDB
from tests.helpers import store_totals


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


@pytest.mark.parametrize(
    "count", [0, 1, ENCODE_BATCH - 1, ENCODE_BATCH, ENCODE_BATCH + 1, 3 * ENCODE_BATCH + 7]
)
def test_a_snapshot_file_list_round_trips(tmp_path: Path, count: int) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        listed = files(count)
        snapshot_id = _snapshot(db, listed, "0" * 64)
        assert db.snapshot_files(snapshot_id) == listed
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
