"""Invariant 3: kill -9 a real `mirrord sync` anywhere, restart, lose nothing.

Crashes come two ways: at named points inside the store and the publisher
(MIRRORD_CRASH_AT makes the process SIGKILL itself there), and from outside
while downloads are in flight or at arbitrary instants.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
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
    spawn_mirrord,
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


async def start_sync(config_path: Path, crash_at: str | None = None) -> asyncio.subprocess.Process:
    return await spawn_mirrord(
        "sync", "--config", str(config_path), "--log-format", "json", env=environment(crash_at)
    )


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


async def restart_and_check(mirror: Mirror, config: Config, config_path: Path) -> None:
    names = {
        hashlib.sha256(p.data).hexdigest(): p.spec.filename
        for key in KEYS
        for p in mirror.tree.packages(key)
    }
    stored_before = {names[sha] for sha in stored_objects(config.storage.path) if sha in names}
    requests_before = len(mirror.origin.requests)

    process = await start_sync(config_path)
    assert await process.wait() == 0

    assert_consistent(config)
    for key in KEYS:
        published = config.publish.path.joinpath(*key.parts, "APKINDEX.tar.gz").read_bytes()
        assert published == (mirror.tree.arch_dir(key) / "APKINDEX.tar.gz").read_bytes()
    assert temp_leftovers(config.storage.path, config.publish.path) == []
    again = [
        r.path.rsplit("/", 1)[1]
        for r in mirror.origin.requests[requests_before:]
        if r.path.endswith(".apk")
    ]
    assert not set(again) & stored_before, "a stored object was downloaded again"
    assert len(again) == len(set(again))


# bucket.* points need an S3 server: tests/test_bucket.py crashes there.
@pytest.mark.parametrize("point", sorted(p for p in KNOWN_POINTS if not p.startswith("bucket.")))
async def test_crash_at_each_point_then_restart(mirror: Mirror, point: str) -> None:
    config, config_path = await setup(mirror)

    process = await start_sync(config_path, crash_at=point)
    assert await process.wait() == -signal.SIGKILL

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
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    mirror.origin.release_stalls.set()

    assert_consistent(config)
    await restart_and_check(mirror, config, config_path)


async def test_repeated_kills_at_growing_delays_never_break_the_tree(mirror: Mirror) -> None:
    """Whatever the instant, the tree stays consistent and the work converges."""
    config, config_path = await setup(mirror)
    for delay in (0.2, 0.4, 0.6, 0.8):
        process = await start_sync(config_path)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), delay)
        except TimeoutError:
            process.send_signal(signal.SIGKILL)
        await process.wait()
        assert_consistent(config)
    await restart_and_check(mirror, config, config_path)
