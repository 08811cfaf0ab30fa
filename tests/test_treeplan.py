"""Publish decisions for a releases directory: what to fetch, link, keep and delete."""

from __future__ import annotations

import pytest

from mirrord.alpine.sidecars import Expected
from mirrord.core.errors import TreeDeletionError
from mirrord.core.model import TreeFile, TreeManifest, TreeSnapshot
from mirrord.publish.generations import branch_goes_back
from mirrord.publish.treeplan import (
    OriginFile,
    choose_latest_stable,
    plan_tree,
    plan_tree_rollback,
)

A, B = "a" * 64, "b" * 64
ISO = "alpine-standard-3.20.3-x86_64.iso"


def _verified(sha256: str, size: int = 10) -> OriginFile:
    return OriginFile(Expected(size, sha256, None, ("latest-releases.yaml",)), size, "t1")


def test_order_is_content_then_sidecars_then_the_yaml() -> None:
    plain = OriginFile(Expected(), 5, "t1")
    origin = {
        "latest-releases.yaml": plain,
        f"{ISO}.sha256": plain,
        ISO: _verified(A),
        "netboot/vmlinuz-lts": plain,
        f"{ISO}.sha512": plain,
    }
    plan = plan_tree("d", origin, TreeManifest(), now=0, grace=1, max_delete_fraction=0.1)
    assert plan.content == (ISO, "netboot/vmlinuz-lts")
    assert plan.indexes == (f"{ISO}.sha256", f"{ISO}.sha512", "latest-releases.yaml")
    assert set(plan.fetch) == set(origin)


def test_verified_files_are_kept_by_digest_unverified_by_size_and_mtime() -> None:
    manifest = TreeManifest(
        {
            ISO: TreeFile(A, 10, ("latest-releases.yaml",), None, "t0"),
            "x.iso": TreeFile(A, 10, ("x.iso.sha256",), None, "t0"),
            "vmlinuz": TreeFile(B, 5, (), None, "t0"),
            "initramfs": TreeFile(B, 5, (), None, "t0"),
            "modloop": TreeFile(B, 5, (), None, "t0"),
        }
    )
    origin = {
        ISO: _verified(A),  # same digest, newer mtime: kept
        "x.iso": _verified(B),  # new digest: fetched
        "vmlinuz": OriginFile(Expected(), None, "t0"),  # lighttpd: no size, same mtime
        "initramfs": OriginFile(Expected(), 6, "t0"),  # size changed
        "modloop": OriginFile(Expected(), 5, "t1"),  # mtime changed
    }
    plan = plan_tree("d", origin, manifest, now=0, grace=1, max_delete_fraction=1.0)
    assert plan.keep == (ISO, "vmlinuz")
    assert plan.fetch == ("initramfs", "modloop", "x.iso")


def test_gone_files_wait_out_the_grace_then_go() -> None:
    files = {f"f{i}": TreeFile(A, 1, (), None, "t") for i in range(4)}
    origin = {f"f{i}": OriginFile(Expected(), 1, "t") for i in range(3)}
    first = plan_tree(
        "d", origin, TreeManifest(files), now=1000, grace=100, max_delete_fraction=0.5
    )
    assert first.delete == () and first.gone_since == {"f3": 1000}
    manifest = TreeManifest(files, first.gone_since)
    early = plan_tree("d", origin, manifest, now=1099, grace=100, max_delete_fraction=0.5)
    assert early.delete == () and early.gone_since == {"f3": 1000}
    due = plan_tree("d", origin, manifest, now=1100, grace=100, max_delete_fraction=0.5)
    assert due.delete == ("f3",) and due.gone_since == {}


def test_mass_deletion_is_refused_unless_forced() -> None:
    files = {f"f{i}": TreeFile(A, 1, (), None, "t") for i in range(10)}
    origin = {f"f{i}": OriginFile(Expected(), 1, "t") for i in range(4)}
    manifest = TreeManifest(files)
    with pytest.raises(TreeDeletionError, match="dropped 6 of 10 files"):
        plan_tree("d", origin, manifest, now=0, grace=1, max_delete_fraction=0.5)
    forced = plan_tree("d", origin, manifest, now=0, grace=1, max_delete_fraction=0.5, force=True)
    assert sorted(forced.gone_since) == [f"f{i}" for i in range(4, 10)]
    # Already pending: not counted again on the next pass.
    again = TreeManifest(files, forced.gone_since)
    assert plan_tree("d", origin, again, now=0, grace=1, max_delete_fraction=0.5).delete == ()


def test_latest_stable_moves_only_to_a_published_branch() -> None:
    assert choose_latest_stable("v3.21", {"v3.21": False, "v3.20": True}, "v3.20") is None
    assert choose_latest_stable("v3.21", {"v3.21": True}, "v3.20") == "v3.21"
    assert choose_latest_stable("v3.20", {"v3.20": True}, "v3.20") is None
    assert choose_latest_stable(None, {"v3.20": True}, "v3.20") is None
    assert choose_latest_stable("v3.22", {}, "v3.20") is None  # not configured here


def test_latest_stable_goes_back_only_to_an_older_stable_branch() -> None:
    assert branch_goes_back("v3.19", "v3.20")
    assert branch_goes_back("v3.9", "v3.10")  # by number, not by text
    assert not branch_goes_back("v3.10", "v3.9")
    assert branch_goes_back("v2.99", "v3.0")
    assert not branch_goes_back("v3.20", "v3.20")
    assert not branch_goes_back("v3.21", "v3.20")
    assert not branch_goes_back("v3.19", None)  # no link yet
    assert not branch_goes_back("edge", "v3.20")  # names that are not vX.Y order nothing
    assert not branch_goes_back("v3.19", "stable")


def test_a_rollback_links_the_snapshot_indexes_last_and_lets_the_rest_wait_out_the_grace() -> None:
    yaml, sidecar, new_iso = "latest-releases.yaml", f"{ISO}.sha256", "alpine-3.20.4.iso"
    old = {ISO: TreeFile(A, 10, (yaml,)), sidecar: TreeFile(B, 5, ()), yaml: TreeFile(B, 7, ())}
    now_files = {**old, yaml: TreeFile(A, 9, ()), new_iso: TreeFile(B, 11, (yaml,))}
    gone = "alpine-3.20.1.iso"
    manifest = TreeManifest(
        {**now_files, gone: TreeFile(A, 3, ())}, {gone: 100.0, ISO: 200.0}, 300.0, 2
    )
    plan = plan_tree_rollback(TreeSnapshot(1, 50.0, old), manifest, now=400.0)
    assert plan.content == (ISO,)
    assert plan.indexes == (sidecar, yaml)
    # The snapshot's files stop waiting; what it does not list waits, from when first gone.
    assert plan.manifest.gone_since == {gone: 100.0, new_iso: 400.0}
    assert plan.manifest.files == {**old, new_iso: now_files[new_iso], gone: TreeFile(A, 3, ())}
    assert (plan.manifest.snapshot, plan.manifest.published_at) == (1, 400.0)
