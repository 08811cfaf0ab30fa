"""Package keys in their own namespace: upgrade from plain keys, no collisions, recovery."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from mirrord.core.clock import SystemClock
from mirrord.core.errors import StoreError
from mirrord.core.model import ArchKey
from mirrord.core.objectkey import SHARDS, package_key_preimage, split_key
from mirrord.demo.repogen import simple_specs
from mirrord.publish.etagcache import EtagCache
from mirrord.storage.maintenance import ScrubProgress, collect_garbage, scrub
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore
from mirrord.sync.runtime import open_runtime
from tests.helpers import (
    LogCapture,
    Mirror,
    check_published,
    package_key_of,
    raw_streams,
    stored_objects,
)

KEY = ArchKey("v3.20", "main", "x86_64")


def preimage_of(package: bytes) -> bytes:
    """The 112 bytes whose plain SHA-256 is the package key's hex."""
    streams = raw_streams(package)
    head, data = b"".join(streams[:-1]), streams[-1]
    sha = hashlib.sha256
    return package_key_preimage(len(package), sha(head).digest(), sha(data).digest())


def published(mirror: Mirror, root: Path) -> dict[str, bytes]:
    directory = root.joinpath(*KEY.parts)
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_keys_name_their_kind_and_shards_never_overlap(tmp_path: Path) -> None:
    hexes = [f"{first:02x}" + "0" * 62 for first in range(256)]
    assert split_key(hexes[0xAB]) == ("sha256", hexes[0xAB])
    assert split_key("apk:" + hexes[0xAB]) == ("apk", hexes[0xAB])
    for bad in ("apk:" + hexes[1][:-1], "APK:" + hexes[1], "sha256:" + hexes[1], "../x"):
        with pytest.raises(StoreError):
            split_key(bad)
    db = StateDB.open(tmp_path / "state.db")
    try:
        keys = [*hexes, *("apk:" + h for h in hexes)]
        db.record_objects([(k, 1, None) for k in keys], 0.0)
        found = [db.object_digests(shard) for shard in SHARDS]
    finally:
        db.close()
    assert all(len(shard) == 1 for shard in found)
    assert sorted(k for shard in found for k in shard) == sorted(keys)


async def test_a_store_keyed_the_old_way_keeps_working_without_a_download(
    mirror: Mirror,
) -> None:
    """Packages stored and recorded under their plain SHA-256 (as before package keys)."""
    specs = simple_specs("a", 6)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY, publish={"keep_snapshots": 1, "grace": 0})
    store = ContentStore(config.storage.path)
    store.prepare()
    db = StateDB.open(config.storage.path / "state.db")
    try:
        rows = [
            (store.put_bytes(p.data), len(p.data), p.checksum) for p in mirror.tree.packages(KEY)
        ]
        store.sync()
        db.record_objects(rows, time.time() - 86400)
    finally:
        db.close()
    old_keys = {sha for sha, _, _ in rows}
    assert all(len(k) == 64 for k in old_keys) and old_keys <= set(stored_objects(store.root))

    (result,) = await mirror.sync(config)
    assert result.outcome.value == "published", result.error
    assert mirror.origin.package_requests() == []  # found by (C:, size): nothing fetched
    packages = {p.spec.filename: p.data for p in mirror.tree.packages(KEY)}
    tree = published(mirror, config.publish.path)
    assert {n: tree[n] for n in packages} == packages
    for package in mirror.tree.packages(KEY):  # hard links to the old objects
        link = config.publish.path.joinpath(*KEY.parts, package.spec.filename)
        old = store.object_path(hashlib.sha256(package.data).hexdigest())
        assert os.path.samefile(link, old)

    newer = simple_specs("b", 1)
    mirror.tree.put(KEY, [*specs, *newer])  # the origin moves on: the new one gets a package key
    (result,) = await mirror.sync(config)
    assert result.outcome.value == "published", result.error
    assert [r.path for r in mirror.origin.package_requests()] == [f"/{KEY}/{newer[0].filename}"]
    new_key = package_key_of(mirror.tree.built(newer[0]).data)
    assert new_key.startswith("apk:") and new_key in stored_objects(store.root)
    assert check_published(config).ok

    log = LogCapture().logger()
    db = StateDB.open(config.storage.path / "state.db")
    try:
        collected = await collect_garbage(store, db, clock=SystemClock(), grace=0, log=log)
        progress = ScrubProgress()
        bad = await scrub(store, db, progress, clock=SystemClock(), log=log)
    finally:
        db.close()
    # Only the first snapshot's index goes (keep_snapshots 1); every package stays.
    assert collected.deleted == 1 and collected.listed == len(old_keys) + 2  # + index
    assert old_keys | {new_key} <= set(stored_objects(store.root))
    assert bad == [] and progress.checked == len(old_keys) + 2


async def test_a_file_holding_a_package_keys_preimage_poisons_nothing(mirror: Mirror) -> None:
    first, second = simple_specs("a", 2)
    mirror.tree.put(KEY, [first])
    config = mirror.config(KEY)
    store = ContentStore(config.storage.path)
    await mirror.sync(config)  # the package first, then a file of its preimage's bytes
    data = mirror.tree.built(first).data
    preimage = preimage_of(data)
    plain = store.put_bytes(preimage)
    assert "apk:" + plain == package_key_of(data)
    assert store.read_bytes(plain) == preimage
    assert store.read_bytes("apk:" + plain) == data

    other = mirror.tree.built(second).data  # the file first, then the package
    other_preimage = preimage_of(other)
    other_plain = store.put_bytes(other_preimage)
    store.sync()
    mirror.tree.put(KEY, [first, second])
    (result,) = await mirror.sync(config)
    assert result.outcome.value == "published", result.error
    assert store.read_bytes(other_plain) == other_preimage
    assert store.read_bytes("apk:" + other_plain) == other
    assert published(mirror, config.publish.path)[second.filename] == other
    assert check_published(config).ok


async def test_recovery_keeps_a_package_key_object_the_database_missed(mirror: Mirror) -> None:
    specs = simple_specs("a", 3)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY)
    (result,) = await mirror.sync(config)
    assert result.outcome.value == "published", result.error
    store = ContentStore(config.storage.path)
    package = mirror.tree.built(specs[1])
    missed = package_key_of(package.data)
    # A crash between the object's name and the group commit: on disk, not recorded.
    db = StateDB.open(config.storage.path / "state.db")
    try:
        db.forget_objects([missed])
    finally:
        db.close()
    # And an impostor in the package namespace: a file named by its own plain SHA-256.
    impostor = preimage_of(package.data) + b"x"
    impostor_key = "apk:" + hashlib.sha256(impostor).hexdigest()
    store.object_path(impostor_key).write_bytes(impostor)
    requests = len(mirror.origin.package_requests())

    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        report = runtime.recovery
        identity = await runtime.db.call(runtime.db.lookup, [(package.checksum, len(package.data))])
    assert (report.objects_kept, report.objects_dropped) == (1, 1)
    assert identity == {(package.checksum, len(package.data)): missed}
    assert not store.object_path(impostor_key).exists()
    (result,) = await mirror.sync(config, force=frozenset({KEY}))
    assert len(mirror.origin.package_requests()) == requests
    assert check_published(config).ok


def test_the_bucket_etag_cache_remembers_both_kinds_of_key(tmp_path: Path) -> None:
    plain, package = "ab" * 32, "apk:" + "cd" * 32
    entries = {(plain, 10): "0" * 32, (package, 20): "1" * 32 + "-2"}
    EtagCache(tmp_path / "etags", 8, 4).add(entries)
    assert EtagCache(tmp_path / "etags", 8, 4).load() == entries


def test_removing_an_object_removes_a_directory_in_its_place(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    key = "ab" * 32
    path = store.object_path(key)
    (path / "deep").mkdir(parents=True)
    (path / "deep" / "file").write_bytes(b"x")
    assert store.remove(key) and not path.exists()
    assert not store.remove(key)
