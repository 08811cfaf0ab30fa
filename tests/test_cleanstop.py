"""After a clean stop, start-up trusts the clean-stop marker and does not compare the store
with state.db; after kill -9, or with a marker that is not this store's, it does.

What shows whether the comparison ran: an unreadable object placed in ``objects/`` while
mirrord is stopped. The comparison re-hashes it and removes it; a start that trusts the
marker never lists the directory, so the file stays.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from mirrord.core.config import Config
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from mirrord.storage import cleanstop
from mirrord.storage.cleanstop import MARKER, Settlement
from mirrord.storage.store import ContentStore
from tests.daemon_harness import daemon_config, running_daemon
from tests.helpers import Mirror, spawn_mirrord

KEY = ArchKey("v3.20", "main", "x86_64")
STRAY = "ab" + "0" * 62  # its bytes do not hash to its name


def place_stray(config: Config) -> Path:
    path = ContentStore(config.storage.path).object_path(STRAY)
    path.write_bytes(b"not what the name says")
    return path


def place_tree_stray(config: Config) -> None:
    """A package file no index lists: the tree check schedules its deletion."""
    config.publish.path.joinpath(*KEY.parts, "stray-1.0-r0.apk").write_bytes(b"stray")


async def synced_mirror(mirror: Mirror) -> Config:
    mirror.tree.put(KEY, simple_specs("a", 6))
    config = mirror.config(KEY)
    assert [r.outcome for r in await mirror.sync(config)] == ["published"]
    return config


async def daemon_until_ready(config_path: Path) -> asyncio.subprocess.Process:
    """A real ``mirrord run``, once it has logged ``daemon.ready``."""
    process = await spawn_mirrord(
        "run", "--config", str(config_path), "--log-format", "json", stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    while line := await asyncio.wait_for(process.stdout.readline(), 60):
        if json.loads(line).get("event") == "daemon.ready":
            return process
    raise AssertionError(f"mirrord run ended before it was ready: {await process.wait()}")


async def test_a_clean_stop_lets_the_next_start_skip_the_store_comparison(
    mirror: Mirror,
) -> None:
    config = await synced_mirror(mirror)
    assert (config.storage.path / MARKER).exists()
    stray = place_stray(config)
    place_tree_stray(config)

    assert [r.outcome for r in await mirror.sync(config)] == ["unchanged"]

    assert len(mirror.logs.events("recovery.store.skipped")) == 1
    assert stray.exists()  # objects/ was not listed
    assert not mirror.logs.events("recovery.files.scheduled")  # nor the arch's tree
    assert (config.storage.path / MARKER).exists()  # this stop was clean too


async def test_after_kill_9_the_store_is_compared_again(mirror: Mirror) -> None:
    config = await synced_mirror(mirror)
    config_path = daemon_config(mirror, KEY)
    marker = config.storage.path / MARKER

    process = await daemon_until_ready(config_path)
    assert not marker.exists()  # taken away before any work
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    assert not marker.exists()
    stray = place_stray(config)
    place_tree_stray(config)

    await mirror.sync(config)

    assert mirror.logs.events("recovery.store.compare")
    assert not mirror.logs.events("recovery.store.skipped")
    assert not stray.exists()  # re-hashed and removed by the comparison
    [scheduled] = mirror.logs.events("recovery.files.scheduled")
    assert scheduled["files"] == 1


async def test_the_daemon_leaves_the_marker_when_sigterm_stops_it_cleanly(
    mirror: Mirror,
) -> None:
    config = await synced_mirror(mirror)
    process = await daemon_until_ready(daemon_config(mirror, KEY))
    process.send_signal(signal.SIGTERM)
    assert await process.wait() == 0
    stray = place_stray(config)

    await mirror.sync(config)

    assert mirror.logs.events("recovery.store.skipped")
    assert stray.exists()


@pytest.mark.parametrize("change", ["database_restored", "marker_from_another_store"])
async def test_a_marker_that_does_not_match_this_store_is_not_trusted(
    mirror: Mirror, tmp_path: Path, change: str
) -> None:
    config = await synced_mirror(mirror)
    storage = config.storage.path
    if change == "database_restored":  # a copy is another file, whatever its bytes
        shutil.copy2(storage / "state.db", tmp_path / "backup.db")
        shutil.move(tmp_path / "backup.db", storage / "state.db")
    else:
        other = tmp_path / "other-storage"
        (other / "objects").mkdir(parents=True)
        shutil.copy2(storage / "state.db", other / "state.db")
        cleanstop.leave(other, other / "state.db", config.publish.path, [str(KEY)], 0.0)
        shutil.copy2(other / MARKER, storage / MARKER)
    stray = place_stray(config)

    await mirror.sync(config)

    [warning] = mirror.logs.events("recovery.marker.untrusted")
    assert "changed since the stop" in warning["problem"]
    assert not stray.exists()


async def test_a_tree_moved_elsewhere_is_checked_though_the_store_is_not(
    mirror: Mirror, tmp_path: Path
) -> None:
    config = await synced_mirror(mirror)
    moved = mirror.config(KEY, publish={"path": str(tmp_path / "moved")})
    shutil.copytree(config.publish.path, moved.publish.path, symlinks=True)
    place_tree_stray(moved)

    await mirror.sync(moved)

    assert mirror.logs.events("recovery.store.skipped")
    [scheduled] = mirror.logs.events("recovery.files.scheduled")
    assert scheduled["files"] == 1


def test_the_verdict_names_what_changed(tmp_path: Path) -> None:
    (tmp_path / "objects").mkdir()
    database = tmp_path / "state.db"
    database.write_bytes(b"x" * 100)
    recorded = cleanstop.identity(tmp_path, database)
    assert cleanstop.verdict(recorded, cleanstop.identity(tmp_path, database)) is None
    assert cleanstop.verdict(None, recorded) == "unreadable"
    assert cleanstop.verdict({**recorded, "version": 0}, recorded) == "another version"

    database.with_name("state.db-wal").write_bytes(b"frames")
    now = cleanstop.identity(tmp_path, database)
    assert cleanstop.verdict(recorded, now) == "wal changed since the stop"
    database.unlink()
    assert cleanstop.verdict(recorded, cleanstop.identity(tmp_path, database)) == (
        "no state database"
    )


async def test_work_cut_short_spoils_the_clean_stop() -> None:
    settlement = Settlement()
    inside = asyncio.Event()

    async def removal() -> None:
        with settlement.at_risk("garbage collection"):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(removal())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert settlement.broken == "garbage collection stopped half-way"
    settlement.spoil("later reason")
    assert settlement.broken == "garbage collection stopped half-way"  # the first one stays


async def test_a_stop_that_cancels_downloads_leaves_no_marker(mirror: Mirror) -> None:
    specs = simple_specs("a", 4)
    mirror.tree.put(KEY, specs)
    mirror.origin.add_fault(f"v3.20/main/x86_64/{specs[-1].filename}", Fault.stall(after=100))
    config_path = daemon_config(mirror, KEY, shutdown_grace=0.2)
    async with running_daemon(mirror, config_path) as daemon:
        await mirror.origin.stalled.wait()
    mirror.origin.release_stalls.set()

    assert mirror.logs.events("daemon.stop.grace_expired")
    [unclean] = mirror.logs.events("daemon.stop.unclean")
    assert unclean["reason"] == "downloads and syncs in flight cancelled"
    assert not (daemon.config.storage.path / MARKER).exists()
