"""Invariant 3: kill -9 a real `mirrord sync` anywhere, restart, lose nothing.

Crashes come two ways: at named points inside the store and the publisher
(MIRRORD_CRASH_AT makes the process SIGKILL itself there), and from outside
while downloads are in flight or at arbitrary instants. Every kill is checked
to have happened (exit by SIGKILL). After the restart the test counts stored
objects and what the sync stored, not HTTP requests: a legitimate retry under
load is another request for the same file, not a re-download.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from mirrord.core.config import Config
from mirrord.core.crashpoints import ENV_VAR, KNOWN_POINTS
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import PackageSpec, simple_specs
from tests.helpers import (
    Mirror,
    check_published,
    package_key_of,
    spawn_mirrord,
    store_totals,
    stored_objects,
    temp_leftovers,
)

KEYS = [ArchKey("v3.20", "main", "x86_64"), ArchKey("v3.20", "main", "aarch64")]


def first_generation(arch: str) -> list[PackageSpec]:
    return simple_specs(f"p-{arch}", 30, arch=arch, payload=3000)


def second_generation(arch: str) -> list[PackageSpec]:
    old = first_generation(arch)
    new = simple_specs(f"n-{arch}", 12, arch=arch, seed=3)
    return [*(s.bumped() for s in old[:3]), *old[5:], *new]


def environment(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if crash_at:
        env[ENV_VAR] = crash_at
    return env


async def start_sync(
    config_path: Path, crash_at: str | None = None, stdout: int = subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    return await spawn_mirrord(
        "sync",
        "--config",
        str(config_path),
        "--log-format",
        "json",
        env=environment(crash_at),
        stdout=stdout,
    )


def durable_objects(storage: Path) -> set[str]:
    """Objects the state database records: durable before they were recorded."""
    with closing(sqlite3.connect(storage / "state.db")) as db:
        return {str(row[0]) for row in db.execute("SELECT sha256 FROM objects")}


async def killed(process: asyncio.subprocess.Process) -> None:
    """SIGKILL it, and check that the kill is what ended it (not a finished sync)."""
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


async def setup(mirror: Mirror) -> tuple[Config, Path]:
    for key in KEYS:
        mirror.tree.put(key, first_generation(key.arch))
    # The production shape: downloads in worker processes.
    extra = {
        "fetch": {
            "concurrency": 4,
            "read_timeout": 2,
            "attempts": 2,
            "processes": 2,
            "processes_from": 0,
        }
    }
    config = mirror.config(*KEYS, **extra)
    assert all(r.outcome == "published" for r in await mirror.sync(config))
    for key in KEYS:
        mirror.tree.put(key, second_generation(key.arch))
    return config, mirror.config_file(*KEYS, **extra)


def assert_consistent(config: Config) -> None:
    """Every published index verifies and every file it lists is intact."""
    report = check_published(config)
    assert report.ok, report.problems
    assert report.arches == len(KEYS)
    kept, counted = store_totals(config.storage.path / "state.db")
    assert kept == counted, "the kept store totals drifted from the objects recorded"


async def restart_and_check(mirror: Mirror, config: Config, config_path: Path) -> None:
    """Restart; nothing durable is downloaded again, and exactly what was not stored is."""
    names = {
        package_key_of(p.data): p.spec.filename for key in KEYS for p in mirror.tree.packages(key)
    }
    on_disk = set(stored_objects(config.storage.path))
    durable = durable_objects(config.storage.path)
    assert {sha for sha in durable if sha in names} <= on_disk, "a recorded object is gone"
    lacking = {sha for sha in names if sha not in on_disk}
    requests_before = len(mirror.origin.requests)

    process = await start_sync(config_path, stdout=subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0

    assert_consistent(config)
    for key in KEYS:
        published = config.publish.path.joinpath(*key.parts, "APKINDEX.tar.gz").read_bytes()
        assert published == (mirror.tree.arch_dir(key) / "APKINDEX.tar.gz").read_bytes()
    assert temp_leftovers(config.storage.path, config.publish.path) == []
    # Stored objects: every package of the new generation, once (content-addressed).
    assert set(names) <= set(stored_objects(config.storage.path))
    # What the sync stored: exactly the packages that were not on disk at the restart
    # (an intact object that reached objects/ but not the database is recovered, not fetched).
    done = [json.loads(line) for line in out.splitlines() if b'"sync.arch.done"' in line]
    assert sorted(e["arch"] for e in done) == sorted(str(k) for k in KEYS)
    assert sum(e["fetched"] for e in done) == len(lacking)
    # Re-downloads of durable objects: none, however many requests retries took.
    fetched = {r.path.rsplit("/", 1)[1] for r in mirror.origin.requests[requests_before:]}
    again = fetched & {names[sha] for sha in durable if sha in names}
    assert not again, f"durable objects downloaded again: {sorted(again)}"


# bucket.* points need an S3 server: tests/test_bucket.py crashes there.
@pytest.mark.parametrize(
    "point", sorted(p for p in KNOWN_POINTS if not p.startswith(("bucket.", "releases.")))
)
async def test_crash_at_each_point_then_restart(mirror: Mirror, point: str) -> None:
    config, config_path = await setup(mirror)

    process = await start_sync(config_path, crash_at=point)
    assert await process.wait() == -signal.SIGKILL  # it reached the point and died there

    assert_consistent(config)
    await restart_and_check(mirror, config, config_path)


async def test_kill_from_outside_during_downloads_then_restart(mirror: Mirror) -> None:
    config, config_path = await setup(mirror)
    stalled = second_generation("x86_64")[-1].filename
    mirror.origin.add_fault(f"v3.20/main/x86_64/{stalled}", Fault.stall(after=100))
    start = len(mirror.origin.requests)

    process = await start_sync(config_path)
    # Kill it mid-transfer: one body is stalled and many others have been served.
    await mirror.origin.stalled.wait()
    await mirror.origin.wait_for_requests(
        lambda r: r.path.endswith(".apk") and mirror.origin.requests.index(r) >= start, count=20
    )
    await killed(process)
    mirror.origin.release_stalls.set()

    assert_consistent(config)
    await restart_and_check(mirror, config, config_path)


async def test_repeated_kills_at_growing_delays_never_break_the_tree(mirror: Mirror) -> None:
    """Whatever the instant, the tree stays consistent and the work converges.

    One package stalls in every attempt, so no attempt can finish before its kill:
    each of them really dies by SIGKILL at its instant.
    """
    config, config_path = await setup(mirror)
    stalled = f"v3.20/main/x86_64/{second_generation('x86_64')[-1].filename}"
    for delay in (0.2, 0.4, 0.6, 0.8):
        mirror.origin.faults.pop("/" + stalled, None)
        mirror.origin.add_fault(stalled, Fault.stall(after=100))
        process = await start_sync(config_path)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), delay)
        await killed(process)
        assert_consistent(config)
    mirror.origin.faults.clear()
    mirror.origin.release_stalls.set()
    await restart_and_check(mirror, config, config_path)
