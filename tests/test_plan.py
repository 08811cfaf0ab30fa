"""The pure decisions: what to fetch, what a publish links and unlists, what is due."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from mirrord.alpine.apkindex import IndexEntry
from mirrord.core.errors import MassDeletionError
from mirrord.core.model import ArchKey, PublishedFile
from mirrord.publish.plan import (
    PENDING,
    due_deletions,
    list_files,
    plan_listing,
    plan_publish,
    plan_rollback,
)
from mirrord.storage.filetable import FileTable

KEY = ArchKey("v3.20", "main", "x86_64")


def entry(
    name: str, version: str = "1-r0", checksum: str | None = None, size: int = 100
) -> IndexEntry:
    return IndexEntry(name, version, checksum or f"Q1{name}{version}", size)


def published(e: IndexEntry, sha: str) -> PublishedFile:
    return PublishedFile(e.filename, sha, e.size, e.name)


def identity(e: IndexEntry) -> tuple[str, int]:
    return (e.checksum, e.size)


def test_the_fetch_list_skips_stored_and_deduplicates_identities() -> None:
    a, b, c = entry("a"), entry("b"), entry("c")
    twin = IndexEntry("a-doc", "1-r0", a.checksum, a.size)  # same bytes under another name
    plan = plan_publish(
        KEY, [a, b, twin, c], {identity(b): "sha-b"}, None, max_delete_fraction=0.1, force=False
    )
    assert plan.missing() == [a.ref(), c.ref()]
    plan.fill_one(identity(a), "sha-a")
    assert [f.sha256 for f in plan.files] == ["sha-a", "sha-b", "sha-a", PENDING]
    assert plan.missing() == [c.ref()]


def test_a_listing_packs_entries_as_they_come_and_the_plan_fills_what_is_stored() -> None:
    a, b = entry("a"), entry("b")
    twin = IndexEntry("a-doc", "1-r0", a.checksum, a.size)

    def one_at_a_time() -> Iterator[IndexEntry]:
        yield a
        yield b
        yield twin

    listing = list_files(one_at_a_time())
    assert list(listing.files) == [published(e, PENDING) for e in (a, b, twin)]
    assert dict(listing.waiting) == {identity(a): [0, 2], identity(b): 1}
    listing.fill({identity(a): "sha-a"})
    plan = plan_listing(KEY, listing, None, max_delete_fraction=0.1, force=False)
    assert [f.sha256 for f in plan.files] == ["sha-a", PENDING, "sha-a"]
    assert plan.missing() == [b.ref()]
    assert list(plan.link) == [0, 1, 2]


def test_unchanged_files_take_their_digests_from_the_published_snapshot() -> None:
    a, b, c, d = entry("a"), entry("b"), entry("c"), entry("d")
    keys = {e.name: hashlib.sha256(e.name.encode()).hexdigest() for e in (a, b, c, d)}
    keys["d"] = "stand-in"  # not an object key: copied as text
    first = plan_publish(
        KEY,
        [a, b, c, d],
        {identity(e): keys[e.name] for e in (a, b, c, d)},
        None,
        max_delete_fraction=0.5,
        force=False,
    )
    previous = FileTable.decode(first.files.encode())  # as the state database reads it back
    rebuilt = entry("b", checksum="Q1rebuilt")  # same name and size, other C: (no version bump)
    resized = entry("c", size=101)  # same C:, other size
    new = entry("e")

    listing = list_files([a, rebuilt, resized, d, new], previous)

    assert [f.sha256 for f in listing.files] == [keys["a"], PENDING, PENDING, "stand-in", PENDING]
    assert sorted(listing.waiting) == sorted(identity(e) for e in (rebuilt, resized, new))
    listing.fill({identity(e): f"sha-{e.name}" for e in (rebuilt, resized, new)})
    plan = plan_listing(KEY, listing, previous, max_delete_fraction=0.5, force=False)
    assert [f.filename for f in plan.to_link] == [rebuilt.filename, resized.filename, new.filename]
    assert plan.replaced == (rebuilt.filename, resized.filename)


def test_a_snapshot_without_checksums_or_digests_gives_no_digest() -> None:
    a, b = entry("a"), entry("b")
    recorded = plan_publish(
        KEY, [a, b], {identity(a): "sha-a"}, None, max_delete_fraction=0.5, force=False
    ).files  # b still pending
    assert len(list_files([a, b], recorded).waiting) == 1  # b: nothing to take
    text_rows = FileTable(list(recorded))  # a list recorded before checksums were
    assert sorted(list_files([a, b], text_rows).waiting) == [identity(a), identity(b)]


def test_a_waiting_identity_is_fetched_under_its_first_file_name() -> None:
    a = entry("a")
    twin = IndexEntry("a-doc", "1-r0", a.checksum, a.size)
    plan = plan_publish(KEY, [twin, a], {}, None, max_delete_fraction=0.1, force=False)
    assert list(plan.waiting) == [identity(a)]
    assert plan.ref(identity(a)) == twin.ref()
    plan.fill_one(identity(a), "sha-a")
    with pytest.raises(KeyError):
        plan.ref(identity(a))


def test_first_publish_links_everything_and_waits_for_pending_digests() -> None:
    a, b = entry("a"), entry("b")
    plan = plan_publish(
        KEY, [a, b], {identity(a): "sha-a"}, None, max_delete_fraction=0.1, force=False
    )
    assert [f.sha256 for f in plan.files] == ["sha-a", PENDING]
    assert list(plan.link) == [0, 1] and plan.replaced == () and plan.unlisted == ()
    plan.fill({identity(b): "sha-b"})
    assert [f.sha256 for f in plan.to_link] == ["sha-a", "sha-b"]
    assert plan.waiting == {}


def test_incremental_publish_links_only_what_changed() -> None:
    old = [entry(f"p{i}") for i in range(20)]
    previous = [published(e, f"sha-{e.name}") for e in old]
    rebuilt = entry("p0", "1-r1")
    added = entry("new")
    same_name_new_bytes = entry("p1", checksum="Q1other")
    entries = [rebuilt, same_name_new_bytes, *old[2:19], added]  # p19 dropped
    known = {identity(e): f"sha-{e.name}" for e in old[2:19]}
    plan = plan_publish(KEY, entries, known, previous, max_delete_fraction=0.1, force=False)
    assert sorted(plan.files[i].filename for i in plan.link) == sorted(
        [rebuilt.filename, same_name_new_bytes.filename, added.filename]
    )
    assert plan.replaced == (same_name_new_bytes.filename,)
    assert set(plan.unlisted) == {old[0].filename, old[19].filename}
    assert plan.dropped_packages == ("p19",)  # p0 got a new version: not a drop


def test_the_mass_deletion_guard_counts_package_names() -> None:
    old = [entry(f"p{i}") for i in range(10)]
    previous = [published(e, f"sha-{e.name}") for e in old]
    known = {identity(e): f"sha-{e.name}" for e in old}
    one_dropped = old[:9]
    plan_publish(KEY, one_dropped, known, previous, max_delete_fraction=0.10, force=False)
    with pytest.raises(MassDeletionError) as caught:
        plan_publish(KEY, old[:8], known, previous, max_delete_fraction=0.10, force=False)
    assert caught.value.dropped == 2 and caught.value.previous == 10
    assert caught.value.examples == ("p8", "p9")
    assert "drops 2 of 10 package names (p8, p9) (20.0% > " in str(caught.value)
    assert f"'mirrord ctl publish --force {KEY}' (daemon) or 'mirrord sync --force {KEY}'" in str(
        caught.value
    )
    with pytest.raises(MassDeletionError) as many:
        plan_publish(KEY, old[:2], known, previous, max_delete_fraction=0.10, force=False)
    assert "(p2, p3, p4, p5, p6 and 3 more)" in str(many.value)
    forced = plan_publish(KEY, old[:8], known, previous, max_delete_fraction=0.10, force=True)
    assert len(forced.dropped_packages) == 2


def test_relink_all_and_adopted_files_link_again_without_counting_as_replaced() -> None:
    a = entry("a")
    adopted = [PublishedFile(a.filename, "", a.size, a.name)]
    plan = plan_publish(
        KEY, [a], {identity(a): "sha-a"}, adopted, max_delete_fraction=0.1, force=False
    )
    assert list(plan.link) == [0] and plan.replaced == ()
    current = [published(a, "sha-a")]
    unchanged = plan_publish(
        KEY, [a], {identity(a): "sha-a"}, current, max_delete_fraction=0.1, force=False
    )
    assert list(unchanged.link) == []
    repair = plan_publish(
        KEY,
        [a],
        {identity(a): "sha-a"},
        current,
        max_delete_fraction=0.1,
        force=False,
        relink_all=True,
    )
    assert list(repair.link) == [0]


def test_a_plan_is_complete_only_when_every_digest_is_in() -> None:
    a, b = entry("a"), entry("b")
    twin = IndexEntry("b-doc", "1-r0", b.checksum, b.size)
    plan = plan_publish(KEY, [a, b, twin], {}, None, max_delete_fraction=0.1, force=False)
    plan.fill({identity(a): "sha-a"})
    assert not plan.complete
    plan.fill_one(identity(b), "sha-b")
    assert plan.complete and [f.sha256 for f in plan.files] == ["sha-a", "sha-b", "sha-b"]
    with pytest.raises(KeyError):
        plan.fill_one(identity(b), "again")


def test_rollback_bypasses_the_guard() -> None:
    old = [published(entry(f"p{i}"), f"sha{i}") for i in range(10)]
    plan = plan_rollback(KEY, old[:1], old)
    assert len(plan.unlisted) == 9 and len(plan.dropped_packages) == 9


def test_due_deletions() -> None:
    pending = {"a.apk": 100.0, "b.apk": 150.0, "c.apk": 10.0}
    due, relisted = due_deletions(pending, ["c.apk"], now=200.0, grace=60)
    assert due == ["a.apk"] and relisted == ["c.apk"]
