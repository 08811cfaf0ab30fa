"""Incremental passes: only new bytes are fetched; removed files outlive the grace period."""

from __future__ import annotations

from mirrord.core.clock import FakeClock
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from tests.helpers import Mirror, check_published

KEY = ArchKey("v3.20", "main", "x86_64")
GRACE = 3600


async def test_add_rebuild_remove_fetches_only_new_files_and_keeps_removed_ones(
    mirror: Mirror,
) -> None:
    clock = FakeClock()
    specs = simple_specs("pkg", 40, payload=3000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY, publish={"grace": GRACE})
    assert (await mirror.sync(config, clock=clock))[0].outcome == "published"
    first_requests = len(mirror.origin.package_requests())
    assert first_requests == 40

    added = simple_specs("new", 5, payload=2000, seed=7)
    rebuilt = [s.bumped() for s in specs[:3]]
    removed = specs[3:5]
    kept = specs[5:]
    mirror.tree.put(KEY, [*rebuilt, *kept, *added])
    clock.advance(10)

    (result,) = await mirror.sync(config, clock=clock)

    assert result.outcome == "published", result.error
    planned = mirror.logs.events("sync.arch.planned")[-1]
    # The kept packages' digests came from the published snapshot, not the store's lookup.
    assert (planned["unchanged"], planned["stored"], planned["missing"]) == (35, 35, 8)
    new_requests = mirror.origin.package_requests()[first_requests:]
    assert sorted(r.path.rsplit("/", 1)[1] for r in new_requests) == sorted(
        s.filename for s in [*added, *rebuilt]
    )
    published = config.publish.path.joinpath(*KEY.parts)
    assert (published / "APKINDEX.tar.gz").read_bytes() == (
        mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz"
    ).read_bytes()
    report = check_published(config)
    assert report.ok and report.files == 43
    gone = [*removed, *specs[:3]]  # dropped names, and the versions the rebuilds replaced
    assert all((published / s.filename).exists() for s in gone), "kept during the grace period"

    # Just before the grace period ends: still there (a 304 pass runs the expiry).
    clock.advance(GRACE - 20)
    assert (await mirror.sync(config, clock=clock))[0].outcome == "unchanged"
    assert all((published / s.filename).exists() for s in gone)

    clock.advance(30)
    assert (await mirror.sync(config, clock=clock))[0].outcome == "unchanged"
    assert not any((published / s.filename).exists() for s in gone)
    assert sorted(p.name for p in published.glob("*.apk")) == sorted(
        s.filename for s in [*rebuilt, *kept, *added]
    )
    assert check_published(config).ok
    assert len(mirror.origin.package_requests()) == first_requests + 8


async def test_a_file_listed_again_within_grace_is_not_deleted(mirror: Mirror) -> None:
    clock = FakeClock()
    specs = simple_specs("pkg", 30, payload=1000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY, publish={"grace": GRACE})
    await mirror.sync(config, clock=clock)
    mirror.tree.put(KEY, specs[1:])  # drop one
    clock.advance(10)
    await mirror.sync(config, clock=clock)
    mirror.tree.put(KEY, specs)  # and bring it back
    clock.advance(10)
    await mirror.sync(config, clock=clock)
    clock.advance(2 * GRACE)
    await mirror.sync(config, clock=clock)
    published = config.publish.path.joinpath(*KEY.parts)
    assert (published / specs[0].filename).exists()
    assert check_published(config).files == 30
    assert len(mirror.origin.package_requests()) == 30  # its bytes never left the store


async def test_a_tree_to_repair_looks_every_package_up_again(mirror: Mirror) -> None:
    """An index changed behind mirrord's back: the published snapshot vouches for nothing."""
    specs = simple_specs("pkg", 12, payload=1000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY)
    assert (await mirror.sync(config))[0].outcome == "published"
    published = config.publish.path.joinpath(*KEY.parts)
    (published / "APKINDEX.tar.gz").unlink()
    (published / specs[0].filename).unlink()  # replaced, not written through: a hard link
    (published / specs[0].filename).write_bytes(b"damaged")

    (result,) = await mirror.sync(config)

    assert result.outcome == "published", result.error
    planned = mirror.logs.events("sync.arch.planned")[-1]
    assert (planned["unchanged"], planned["stored"], planned["missing"]) == (0, 12, 0)
    assert check_published(config).ok
    assert len(mirror.origin.package_requests()) == 12


async def test_an_index_replaced_while_no_mirrord_ran_is_published_again(mirror: Mirror) -> None:
    """A new process does not vouch for the index it finds on disk: it compares its digest."""
    mirror.tree.put(KEY, simple_specs("pkg", 5, payload=1000))
    config = mirror.config(KEY)
    assert (await mirror.sync(config))[0].outcome == "published"
    index = config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz")
    served = index.read_bytes()
    index.unlink()  # replaced, not written through: a hard link into the store
    index.write_bytes(b"an index that is not the one published")

    (result,) = await mirror.sync(config)

    assert result.outcome == "published", result.error
    assert index.read_bytes() == served
    assert check_published(config).ok
    assert len(mirror.origin.package_requests()) == 5  # nothing fetched again
