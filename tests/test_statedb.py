"""The state database keeps each snapshot's file list exactly (rollback relies on it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mirrord.core.model import PublishedFile
from mirrord.storage.statedb import ENCODE_BATCH, StateDB


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
        snapshot_id = db.add_snapshot(
            "v3.20/main/x86_64",
            created_at=1.0,
            index_sha256="0" * 64,
            index_size=10,
            last_modified=None,
            etag=None,
            last_modified_header=None,
            description="test",
            files=listed,
            status="published",
        )
        assert db.snapshot_files(snapshot_id) == listed
        snapshot = db.snapshot(snapshot_id)
        assert snapshot is not None
        assert (snapshot.packages, snapshot.bytes) == (count, sum(f.size for f in listed))
    finally:
        db.close()
