"""A full disk: refused before a pass when it cannot fit, harmless when it fills mid-pass.

Storage and publish share a small size-limited tmpfs the test mounts (published
files are hard links, so they must share a filesystem); filling it is real ENOSPC.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import PackageSpec, simple_specs
from mirrord.storage.space import shortfall
from mirrord.storage.store import ContentStore
from mirrord.sync.status import Outcome
from tests.helpers import Mirror, check_published, package_key_of, stored_objects, temp_leftovers

KEY = ArchKey("v3.20", "main", "x86_64")
SIZE = 8 << 20  # the filesystem: 8 MiB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def on_fs(fs: Path, **extra: Any) -> dict[str, Any]:
    storage = {"path": str(fs / "storage"), **extra.pop("storage", {})}
    return {"storage": storage, "publish": {"path": str(fs / "published")}, **extra}


def fill(fs: Path) -> Path:
    """Another process takes every free byte (real ENOSPC for whoever writes next)."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (65536, 512):  # big blocks, then the last partial one
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def digest(mirror: Mirror, spec: PackageSpec) -> str:
    return package_key_of(mirror.tree.built(spec).data)


def test_shortfall_counts_the_reserve_and_syncs_in_progress() -> None:
    assert shortfall(needed=100, free=1000, reserve=900) == 0
    assert shortfall(needed=101, free=1000, reserve=900) == 1
    assert shortfall(needed=100, free=1000, reserve=900, others=50) == 50
    assert shortfall(needed=0, free=10, reserve=100) == 90  # already below the reserve


async def test_a_pass_that_cannot_fit_is_refused_before_a_byte_is_fetched(
    mirror: Mirror, small_fs: Path
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 12, payload=100_000))
    metrics = Metrics()
    tight = mirror.config(KEY, **on_fs(small_fs, storage={"min_free": "7.5MiB"}))
    (result,) = await mirror.sync(tight, metrics=metrics)
    assert result.outcome is Outcome.REFUSED
    assert result.error is not None and "not enough disk space" in result.error
    assert "storage.min_free keeps 7.9 MB" in result.error
    assert mirror.origin.package_requests() == []
    assert not (small_fs / "published" / str(KEY) / "APKINDEX.tar.gz").exists()
    labels = Metrics.labels(KEY)
    assert metrics.disk_refusals.labels(**labels)._value.get() == 1
    assert 0 < metrics.disk_free._value.get() <= SIZE

    (result,) = await mirror.sync(mirror.config(KEY, **on_fs(small_fs, storage={"min_free": 0})))
    assert result.outcome is Outcome.PUBLISHED and result.fetched == 12
    assert check_published(tight).ok


async def test_enospc_mid_pass_damages_nothing_and_the_next_pass_fetches_only_what_is_missing(
    mirror: Mirror, small_fs: Path
) -> None:
    first = simple_specs("a", 12, payload=100_000)
    mirror.tree.put(KEY, first)
    config = mirror.config(
        KEY, **on_fs(small_fs, storage={"min_free": 0}), fetch={"concurrency": 16}
    )
    (result,) = await mirror.sync(config)
    assert result.outcome is Outcome.PUBLISHED
    index = small_fs / "published" / str(KEY) / "APKINDEX.tar.gz"
    served = index.read_bytes()

    second = first[:6] + [s.bumped() for s in first[6:]]
    mirror.tree.put(KEY, second)
    for spec in second[6:]:  # every new package stalls after 20 kB until the disk is full
        mirror.origin.add_fault(f"{KEY}/{spec.filename}", Fault.stall(after=20_000))
    async with asyncio.TaskGroup() as group:
        running = group.create_task(mirror.sync(config))
        await mirror.origin.wait_for_requests(lambda r: r.fault == "stall", 6)
        filler = fill(small_fs)
        mirror.origin.release_stalls.set()
    (result,) = running.result()
    assert result.outcome is Outcome.FAILED
    assert result.error is not None and "No space left on device" in result.error
    # No partial object, no temp file, and the old snapshot still served whole.
    assert temp_leftovers(small_fs / "storage", small_fs / "published") == []
    store = ContentStore(small_fs / "storage")
    for key, _size in stored_objects(small_fs / "storage").items():
        data = store.object_path(key).read_bytes()
        assert (
            package_key_of(data) if key.startswith("apk:") else hashlib.sha256(data).hexdigest()
        ) == key
    assert index.read_bytes() == served
    assert check_published(config).ok

    os.unlink(filler)  # space returns
    stored = set(stored_objects(small_fs / "storage"))
    missing = {spec.filename for spec in second if digest(mirror, spec) not in stored}
    assert missing and missing <= {spec.filename for spec in second[6:]}
    before = len(mirror.origin.package_requests())
    (result,) = await mirror.sync(config)
    assert result.outcome is Outcome.PUBLISHED and result.fetched == len(missing)
    fetched = {r.path.rsplit("/", 1)[1] for r in mirror.origin.package_requests()[before:]}
    assert fetched == missing  # nothing stored was fetched again
    assert check_published(config).ok and index.read_bytes() != served
