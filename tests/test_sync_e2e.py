"""End to end against a real aiohttp origin on loopback: two branches x two arches."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat

import pytest

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import OriginTree, PackageSpec, simple_specs
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore
from tests.helpers import Mirror, check_published, package_key_of, stored_objects, temp_leftovers

BRANCHES = ("v3.19", "v3.20")
ARCHES = ("x86_64", "aarch64")
SHARED = [
    PackageSpec(f"shared-doc{i}", "2.0-r0", arch="noarch", payload=3000 + i, seed=900 + i)
    for i in range(3)
]


def populate(tree: OriginTree) -> dict[ArchKey, list[PackageSpec]]:
    layout: dict[ArchKey, list[PackageSpec]] = {}
    for b, branch in enumerate(BRANCHES):
        for a, arch in enumerate(ARCHES):
            key = ArchKey(branch, "main", arch)
            specs = simple_specs(f"{branch}-{arch}", 12, arch=arch, payload=4000, seed=10 * b + a)
            specs += SHARED  # identical bytes in every arch and branch
            tree.put(key, specs)
            layout[key] = specs
    return layout


KEYS = [ArchKey(b, "main", a) for b in BRANCHES for a in ARCHES]


@pytest.mark.parametrize("processes", [0, 2], ids=["on-the-loop", "worker-processes"])
async def test_two_branches_two_arches_end_to_end(mirror: Mirror, processes: int) -> None:
    layout = populate(mirror.tree)
    config = mirror.config(*KEYS, fetch={"processes": processes, "processes_from": 0})

    results = await mirror.sync(config)

    assert [r.outcome for r in results] == ["published"] * 4, [r.error for r in results]
    report = check_published(config)
    assert report.ok, report.problems
    assert report.files == sum(len(s) for s in layout.values()) == 60

    for key in layout:
        published = config.publish.path.joinpath(*key.parts)
        origin_dir = mirror.tree.arch_dir(key)
        index = published / "APKINDEX.tar.gz"
        assert index.read_bytes() == (origin_dir / "APKINDEX.tar.gz").read_bytes()
        assert int(index.stat().st_mtime) == int((origin_dir / "APKINDEX.tar.gz").stat().st_mtime)
        for package in mirror.tree.packages(key):
            path = published / package.spec.filename
            info = path.lstat()
            assert stat.S_ISREG(info.st_mode), "plain files, never symlinks"
            assert path.read_bytes() == package.data
            stored = ContentStore(config.storage.path).object_path(package_key_of(package.data))
            assert os.path.samefile(path, stored)

    # Every shared package: one request, one stored object, four published links.
    objects = stored_objects(config.storage.path)
    for spec in SHARED:
        data = mirror.tree.built(spec).data
        assert package_key_of(data) in objects
        requests = [r for r in mirror.origin.package_requests() if r.path.endswith(spec.filename)]
        assert len(requests) == 1
    unique_packages = {package_key_of(p.data) for k in layout for p in mirror.tree.packages(k)}
    assert len(unique_packages) == 4 * 12 + 3
    assert len(objects) == len(unique_packages) + 4  # + the four indexes, kept for rollback
    assert len(mirror.origin.package_requests()) == len(unique_packages)
    assert temp_leftovers(config.storage.path, config.publish.path) == []

    # The state database recorded one snapshot per arch with its file list.
    db = StateDB.open(config.storage.path / "state.db")
    try:
        for key, specs in layout.items():
            current = db.current(str(key))
            assert current is not None
            files = db.snapshot_files(current[0].id)
            assert sorted(f.filename for f in files) == sorted(s.filename for s in specs)
            served = config.publish.path.joinpath(*key.parts, "APKINDEX.tar.gz").read_bytes()
            assert current[0].index_sha256 == hashlib.sha256(served).hexdigest()
    finally:
        db.close()


async def test_second_pass_is_conditional_and_downloads_nothing(
    mirror: Mirror,
) -> None:
    populate(mirror.tree)
    config = mirror.config(*KEYS)
    await mirror.sync(config)
    before = len(mirror.origin.requests)

    results = await mirror.sync(config)

    assert [r.outcome for r in results] == ["unchanged"] * 4
    later = mirror.origin.requests[before:]
    assert len(later) == 4
    assert all(r.path.endswith("APKINDEX.tar.gz") and r.status == 200 for r in later)
    assert all("If-None-Match" in r.headers and "If-Modified-Since" in r.headers for r in later)


async def test_storage_lost_published_tree_kept_refetches_and_republishes(
    mirror: Mirror,
) -> None:
    """A new state database adopts the served index as the guard's baseline."""
    populate(mirror.tree)
    config = mirror.config(*KEYS)
    await mirror.sync(config)
    requests_before = len(mirror.origin.package_requests())
    shutil.rmtree(config.storage.path)

    results = await mirror.sync(config)

    assert [r.outcome for r in results] == ["published"] * 4
    assert len(mirror.logs.events("recovery.snapshot.adopted")) == 4
    # 51 distinct packages; a noarch one may be seeded by more than one arch at once.
    assert 51 <= sum(e["packages"] for e in mirror.logs.events("sync.arch.seeded")) <= 60
    assert len(mirror.origin.package_requests()) == requests_before  # nothing downloaded again
    assert check_published(config).ok
    assert len(stored_objects(config.storage.path)) == 4 * 12 + 3 + 4
