"""A lost or damaged ``state.db``: never published from, rebuilt without downloading a byte.

Real ``mirrord sync`` and ``mirrord recover`` processes against a real origin.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon
from tests.helpers import Mirror, check_published, spawn_mirrord, stored_objects

KEY = ArchKey("v3.20", "main", "x86_64")
PAGE = 4096
FREELIST_COUNT = 36  # offset in the database header


async def mirrord(*args: str) -> tuple[int, str, str]:
    process = await spawn_mirrord(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONUNBUFFERED": "1"}
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def delete(db: Path) -> None:
    for path in (db, db.with_name("state.db-wal"), db.with_name("state.db-shm")):
        path.unlink(missing_ok=True)


def truncate(db: Path) -> None:
    with open(db, "r+b") as handle:
        handle.truncate(db.stat().st_size // 2)


def corrupt_a_page(db: Path) -> None:
    """Overwrite the root page of the objects table (a b-tree page) with garbage."""
    with sqlite3.connect(db) as connection:
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'objects'"
        ).fetchone()
    connection.close()
    with open(db, "r+b") as handle:
        handle.seek((root - 1) * PAGE)
        handle.write(bytes([0xA5]) * PAGE)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [delete, truncate, corrupt_a_page], ids=lambda f: f.__name__)
async def test_a_lost_or_damaged_state_db_is_rebuilt_without_downloading(
    mirror: Mirror, damage: object
) -> None:
    assert callable(damage)
    mirror.tree.put(KEY, simple_specs("a", 8))
    config_path = mirror.config_file(KEY)
    config = mirror.config(KEY)
    assert (await mirrord("sync", "--config", str(config_path)))[0] == 0
    db = config.storage.path / "state.db"
    index = config.publish.path / str(KEY) / "APKINDEX.tar.gz"
    served = index.read_bytes()
    objects = stored_objects(config.storage.path)
    assert len(objects) == 9 and not db.with_name("state.db-wal").exists()
    mirror.tree.put(KEY, [*simple_specs("a", 8), *simple_specs("b", 1)])  # the origin moves on
    fetched_before = len(mirror.origin.package_requests())

    damage(db)
    if damage is not delete:  # refused: nothing is published from a half-read database
        code, _, err = await mirrord("sync", "--config", str(config_path))
        assert code == 3, err
        assert "state database is damaged" in err and "'mirrord recover'" in err
        assert index.read_bytes() == served
        assert len(mirror.origin.package_requests()) == fetched_before
        code, out, err = await mirrord("recover", "--config", str(config_path))
        assert code == 0, err
        assert out.startswith(
            "state database rebuilt from the store and the published tree: 9 objects"
        )
        assert "1 arches adopted as published; nothing was downloaded" in out
        (aside,) = config.storage.path.glob("state.db.damaged-*")
        assert f"the old file is kept as {aside}" in out
    assert stored_objects(config.storage.path) == objects  # nothing re-hashed away

    code, _, err = await mirrord("sync", "--config", str(config_path))
    assert code == 0, err
    fetched = [r.path for r in mirror.origin.package_requests()[fetched_before:]]
    assert fetched == [f"/{KEY}/{simple_specs('b', 1)[0].filename}"]  # only the new package
    assert index.read_bytes() == (mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz").read_bytes()
    assert check_published(config).ok


async def test_a_start_after_a_clean_stop_skips_the_state_check_and_verify_runs_it(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 3))
    config_path = daemon_config(mirror, KEY)
    config = mirror.config(KEY)
    assert (await mirrord("sync", "--config", str(config_path)))[0] == 0
    db = config.storage.path / "state.db"
    assert (config.storage.path / "clean-stop").exists()
    stamp = db.stat()
    with open(db, "r+b") as handle:  # the header's freelist count: only the check reads it
        handle.seek(FREELIST_COUNT)
        handle.write((3).to_bytes(4, "big"))
    os.utime(db, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the file the stop vouched for

    code, out, err = await mirrord("sync", "--config", str(config_path), "--log-format", "json")
    assert code == 0, err
    (skipped,) = [json.loads(x) for x in out.splitlines() if '"recovery.store.skipped"' in x]
    assert skipped["state_check"].startswith("skipped")

    async with running_daemon(mirror, config_path) as daemon:
        assert daemon.operations is not None
        await ctl(daemon, "verify")
        await asyncio.wait_for(daemon.operations.scrub.ended.wait(), 60)
        verify = (await ctl(daemon, "status"))["verify"]
        assert "freelist" in verify["database"] and verify["damaged"] == 0
        (told,) = mirror.logs.events("maintenance.scrub.database_damaged")
        assert "freelist" in told["problems"][0]
        human = await human_ctl(daemon, "status")
        assert "state.db damaged (" in human and "run 'mirrord recover'" in human

    (config.storage.path / "clean-stop").unlink()  # as after a crash: the check runs, refuses
    code, _, err = await mirrord("sync", "--config", str(config_path))
    assert code == 3 and "state database is damaged" in err and "freelist" in err
