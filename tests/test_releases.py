"""Releases trees end to end: a generated tree served by real lighttpd / nginx autoindex."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrord.core.clock import Clock, FakeClock
from mirrord.core.config import Config
from mirrord.demo.releasegen import write_release, write_top
from mirrord.publish.releasecheck import check_releases
from mirrord.storage.treestate import TreeState
from mirrord.sync.feed import Published
from mirrord.sync.runtime import Runtime, open_runtime
from tests.helpers import LogCapture, config_dict, run_mirrord
from tests.releasetree import (
    SERVERS,
    listing_server,
    releases_config,
    releases_pass,
    set_mtime,
    tree_digests,
)

X86 = "v3.20/releases/x86_64"
DAY = 86400.0


def _config(tmp: Path, url: str, keys: Path, **releases: Any) -> Config:
    trees = {"branches": "all", "arches": "all", **releases}
    return releases_config(tmp, url, keys, trees, max_delete_fraction=0.5)


def _origin(root: Path) -> None:
    write_release(root, "v3.19", "x86_64", "3.19.4")
    write_release(root, "v3.20", "x86_64", "3.20.2")
    write_release(root, "v3.20", "x86_64", "3.20.3")
    write_release(root, "v3.20", "aarch64", "3.20.3")
    write_top(root, "v3.20")
    set_mtime(root.rglob("*"), 1_700_000_000)


@asynccontextmanager
async def _synced(
    tmp_path: Path, keys_dir: Path, server: str, clock: Clock | None = None, **releases: Any
) -> AsyncIterator[tuple[Path, Config, Runtime]]:
    """A generated origin served by ``server``, and a runtime that has mirrored it once."""
    origin = tmp_path / "origin"
    _origin(origin)
    releases = releases or {"branches": ["v3.20"], "arches": ["x86_64"]}
    with listing_server(server, origin, tmp_path / "web") as web:
        config = _config(tmp_path, web.url, keys_dir, **releases)
        async with open_runtime(config, log=LogCapture().logger(), clock=clock) as runtime:
            assert (await _pass(runtime)).ok
            yield origin, config, runtime


@asynccontextmanager
async def _every_branch(
    tmp_path: Path, keys_dir: Path
) -> AsyncIterator[tuple[Path, Config, Runtime]]:
    """Every branch's x86_64 releases mirrored once, latest-stable at v3.20 as the origin's."""
    async with _synced(tmp_path, keys_dir, "lighttpd", branches="all", arches=["x86_64"]) as (
        origin,
        config,
        runtime,
    ):
        assert _published_branch(config) == "v3.20"
        yield origin, config, runtime


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _published_branch(config: Config) -> str:
    return os.readlink(config.publish.path / "latest-stable")


_pass = releases_pass


@pytest.mark.parametrize("server", SERVERS)
async def test_full_sync_mirrors_the_whole_tree_byte_for_byte(
    tmp_path: Path, keys_dir: Path, server: str
) -> None:
    origin = tmp_path / "origin"
    _origin(origin)
    with listing_server(server, origin, tmp_path / server) as web:
        config = _config(tmp_path, web.url, keys_dir)
        logs = LogCapture()
        async with open_runtime(config, log=logs.logger()) as runtime:
            events: list[Published] = []
            first = await _pass(runtime, events)
            received = runtime.releases.downloader.received
            second = await _pass(runtime)
            again = runtime.releases.downloader.received
    assert first.ok, [(o.directory, o.error) for o in first.outcomes]
    assert tree_digests(config.publish.path) == tree_digests(origin)
    assert _published_branch(config) == "v3.20"
    assert first.latest_stable == "v3.20"
    outcomes = {o.directory: o.outcome for o in first.outcomes}
    assert outcomes == {
        "v3.19/releases/x86_64": "published",
        "v3.20/releases/aarch64": "published",
        X86: "published",
        "MIRRORS.txt": "published",
    }
    x86 = next(o for o in first.outcomes if o.directory == X86)
    # netboot files and the sidecars themselves have no checksum: size + Last-Modified.
    assert x86.unverified == tuple(
        sorted(
            [f"netboot/{n}" for n in ("initramfs-lts", "modloop-lts", "vmlinuz-lts")]
            + ["latest-releases.yaml"]
            + [
                f"alpine-{f}-{v}-x86_64{s}.{a}"
                for f, s in (("minirootfs", ".tar.gz"), ("standard", ".iso"))
                for v in ("3.20.2", "3.20.3")
                for a in ("sha256", "sha512")
            ]
        )
    )
    # The announcement of a directory names its sidecars and yaml, the yaml last.
    announced = {e.directory: e.changed for e in events}
    assert announced[X86][-1] == f"{X86}/latest-releases.yaml"
    assert f"{X86}/alpine-standard-3.20.3-x86_64.iso.sha256" in announced[X86]
    assert [e.changed for e in events if e.directory == ""] == [
        ("MIRRORS.txt",),
        ("latest-stable",),
    ]
    # A second pass over an unchanged origin downloads nothing and publishes nothing.
    assert {o.outcome for o in second.outcomes} == {"unchanged"}
    assert again == received


async def test_new_release_then_old_one_removed_after_grace(tmp_path: Path, keys_dir: Path) -> None:
    clock = FakeClock(start=1_800_000_000)
    async with _synced(tmp_path, keys_dir, "lighttpd", clock) as (origin, config, runtime):
        before = runtime.releases.downloader.received
        # The origin gains 3.20.4 (netboot files replaced) and drops 3.20.2.
        write_release(origin, "v3.20", "x86_64", "3.20.4")
        old = sorted((origin / X86).glob("alpine-*-3.20.2-*"))
        for path in old:
            path.unlink()
        set_mtime((origin / X86).rglob("*"), 1_700_100_000)
        second = await _pass(runtime)
        fetched = runtime.releases.downloader.received - before
        after_second = tree_digests(config.publish.path / X86)
        yaml_after_second = (config.publish.path / X86 / "latest-releases.yaml").read_text()
        clock.advance(config.publish.grace + 1)
        third = await _pass(runtime)
    published = config.publish.path / X86
    assert second.ok and third.ok
    x86 = next(o for o in second.outcomes if o.directory == X86)
    # Only the new images and the replaced netboot files came over the wire.
    new_bytes = sum(p.stat().st_size for p in (origin / X86).glob("alpine-*-3.20.4-*"))
    netboot = sum(p.stat().st_size for p in (origin / X86 / "netboot").iterdir())
    sidecars = sum(p.stat().st_size for p in (origin / X86).glob("alpine-*-3.20.4-*.sha*"))
    assert fetched == new_bytes - sidecars + netboot
    assert x86.pending_removal == len(old)
    # Removed at the origin, still served during the grace period...
    digests = tree_digests(origin / X86)
    assert {k: after_second[k] for k in digests} == digests
    assert sorted(set(after_second) - set(digests)) == sorted(p.name for p in old)
    assert yaml.safe_load(yaml_after_second)[0]["version"] == "3.20.4"
    # ...and gone once it is over.
    assert tree_digests(published) == digests


async def test_mass_deletion_at_the_origin_is_refused(tmp_path: Path, keys_dir: Path) -> None:
    async with _synced(tmp_path, keys_dir, "nginx-json") as (origin, config, runtime):
        before = tree_digests(config.publish.path)
        for path in (origin / X86).glob("alpine-*"):
            path.unlink()
        (origin / X86 / "latest-releases.yaml").write_text("---\n")
        second = await _pass(runtime)
    x86 = next(o for o in second.outcomes if o.directory == X86)
    assert x86.outcome == "refused"
    assert "refusing to publish: the origin dropped 12 of 16 files" in (x86.error or "")
    assert tree_digests(config.publish.path) == before


@pytest.mark.parametrize("server", ["lighttpd", "nginx-html"])
async def test_corrupted_iso_is_refused_and_the_old_state_served(
    tmp_path: Path, keys_dir: Path, server: str
) -> None:
    async with _synced(tmp_path, keys_dir, server) as (origin, config, runtime):
        before = tree_digests(config.publish.path)
        files = write_release(origin, "v3.20", "x86_64", "3.20.4")
        iso = next(f.path for f in files if f.path.name.endswith(".iso"))
        data = bytearray(iso.read_bytes())
        data[len(data) // 2] ^= 0x01  # one flipped bit, same size
        iso.write_bytes(bytes(data))
        events: list[Published] = []
        second = await _pass(runtime, events)
    x86 = next(o for o in second.outcomes if o.directory == X86)
    assert x86.outcome == "refused"
    assert f"{X86}/alpine-standard-3.20.4-x86_64.iso: sha256 mismatch" in (x86.error or "")
    assert tree_digests(config.publish.path) == before
    assert not (config.publish.path / X86 / iso.name).exists()
    assert [e.directory for e in events] == []


async def test_sidecar_disagreeing_with_the_yaml_is_refused(tmp_path: Path, keys_dir: Path) -> None:
    async with _synced(tmp_path, keys_dir, "nginx-json") as (origin, config, runtime):
        before = tree_digests(config.publish.path)
        received = runtime.releases.downloader.received
        write_release(origin, "v3.20", "x86_64", "3.20.4")
        sidecar = origin / X86 / "alpine-standard-3.20.4-x86_64.iso.sha256"
        sidecar.write_text(f"{'ab' * 32}  alpine-standard-3.20.4-x86_64.iso\n")
        second = await _pass(runtime)
        downloaded = runtime.releases.downloader.received - received
    x86 = next(o for o in second.outcomes if o.directory == X86)
    assert x86.outcome == "refused"
    assert "iso.sha256 against latest-releases.yaml mismatch" in (x86.error or "")
    assert "ab" * 32 in (x86.error or "")
    assert downloaded == 0  # refused from the small files alone, before any image
    assert tree_digests(config.publish.path) == before


def _reader(
    root: Path, stop: threading.Event, seen: list[str], errors: list[str], last: str
) -> None:
    """Loop: readlink latest-stable, then read a file under the branch it names.

    Runs until ``stop``, and then until it has read through a link to ``last``
    (for 30 s at most, so that a failing test ends).
    """
    give_up = time.monotonic() + 30
    while not stop.is_set() or (seen[-1:] != [last] and time.monotonic() < give_up):
        try:
            target = os.readlink(root / "latest-stable")
            text = (root / target / "releases" / "x86_64" / "latest-releases.yaml").read_text()
        except OSError as error:
            errors.append(repr(error))
            continue
        branches = {entry["branch"] for entry in yaml.safe_load(text)}
        if branches != {target}:
            errors.append(f"{target}: yaml names {branches}")
        if not seen or seen[-1] != target:
            seen.append(target)


async def test_latest_stable_switches_branch_atomically_and_only_when_published(
    tmp_path: Path, keys_dir: Path
) -> None:
    async with _every_branch(tmp_path, keys_dir) as (origin, config, runtime):
        stop = threading.Event()
        seen: list[str] = []
        errors: list[str] = []
        reader = threading.Thread(
            target=_reader,
            args=(config.publish.path, stop, seen, errors, "v3.21"),
            daemon=True,
        )
        reader.start()
        try:
            # v3.21 appears with a corrupt image, and the origin already points at it.
            files = write_release(origin, "v3.21", "x86_64", "3.21.0")
            iso = next(f.path for f in files if f.path.name.endswith(".iso"))
            iso.write_bytes(b"\0" * iso.stat().st_size)
            write_top(origin, "v3.21")
            held = await _pass(runtime)
            assert _published_branch(config) == "v3.20"  # v3.21 is not published
            assert held.latest_stable == "v3.20"
            # Fixed at the origin: v3.21 is published, then the link moves to it.
            iso.write_bytes(next(f.data for f in files if f.path == iso))
            moved = await _pass(runtime)
        finally:
            stop.set()
            await asyncio.to_thread(reader.join, 30)
    assert not (config.publish.path / ".mirrord-tmp-latest-stable").exists()
    assert {o.directory: o.outcome for o in held.outcomes}["v3.21/releases/x86_64"] == "refused"
    assert moved.ok and moved.latest_stable == "v3.21"
    assert errors == []
    assert seen == ["v3.20", "v3.21"]


async def test_latest_stable_never_moves_back_to_an_older_branch_unless_told_to(
    tmp_path: Path, keys_dir: Path
) -> None:
    async with _every_branch(tmp_path, keys_dir) as (origin, config, runtime):
        write_top(origin, "v3.19")  # a server behind the others: its link names v3.19
        refused = await _pass(runtime)
        assert _published_branch(config) == "v3.20"
        (outcome,) = [o for o in refused.outcomes if o.directory == "latest-stable"]
        assert outcome.outcome == "refused" and not refused.ok
        assert outcome.error == (
            "refusing to move latest-stable back from v3.20 to v3.19: the origin's link names "
            "an older branch (a server behind the others, or a restore); "
            "publish.older_index: publish follows it"
        )
        assert runtime.releases.status["latest-stable"].outcome == "refused"

        write_top(origin, "v3.20")  # it caught up: nothing to move, and nothing wrong any more
        assert (await _pass(runtime)).ok
        assert runtime.releases.status["latest-stable"].outcome == "unchanged"

        write_top(origin, "v3.19")
        follow = replace(config, publish=replace(config.publish, older_index="publish"))
        runtime.live.replace(follow, runtime.live.keyring)  # as a reload does
        assert (await _pass(runtime)).latest_stable == "v3.19"
        assert _published_branch(config) == "v3.19"


async def test_verify_tree_checks_against_sidecars_and_names_unverified_files(
    tmp_path: Path, keys_dir: Path
) -> None:
    async with _synced(tmp_path, keys_dir, "nginx-html") as (_origin_root, config, _runtime):
        pass
    config_file = tmp_path / "mirrord.yaml"
    data = config_dict(
        tmp_path,
        "http://127.0.0.1:1",
        keys_dir,
        [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
        releases={"branches": ["v3.20"], "arches": ["x86_64"]},
    )
    config_file.write_text(yaml.safe_dump(data))
    published = config.publish.path / X86
    result = run_mirrord("verify-tree", "--config", str(config_file))
    lines = result.stdout.splitlines()
    unverified = sorted(line.split(": ")[1] for line in lines if line.startswith("unverified:"))
    assert f"{X86}/netboot/vmlinuz-lts" in unverified
    assert f"{X86}/alpine-standard-3.20.3-x86_64.iso" not in unverified
    assert "MIRRORS.txt" in unverified
    summary = lines[-1]
    assert summary.startswith("releases: 1 directories, 17 files")
    assert "4 verified against sidecars/yaml, 13 by size + Last-Modified only" in summary
    assert summary.endswith("; 0 problems")
    # (The package repository of this configuration was never synced: its one problem.)
    assert [line for line in lines if line.startswith("problem:")] == [
        "problem: v3.20/main/x86_64: no APKINDEX.tar.gz"
    ]
    assert "latest-stable -> v3.20" in summary
    # One flipped bit in a published image: verify-tree names it and fails.
    iso = published / "alpine-standard-3.20.3-x86_64.iso"
    data_bytes = bytearray(iso.read_bytes())
    data_bytes[100] ^= 0x01
    iso.unlink()  # a new file: the store's object keeps its bytes
    iso.write_bytes(bytes(data_bytes))
    broken = check_releases(config.publish.path, TreeState(config.storage.path), ("MIRRORS.txt",))
    assert [p.split(": expected")[0] for p in broken.problems] == [
        f"{X86}: {X86}/alpine-standard-3.20.3-x86_64.iso: sha256 mismatch"
    ]


async def test_garbage_collection_keeps_what_the_releases_trees_publish(
    tmp_path: Path, keys_dir: Path
) -> None:
    clock = FakeClock(start=1_800_000_000)
    async with _synced(tmp_path, keys_dir, "lighttpd", clock) as (_root, config, runtime):
        clock.advance(config.publish.grace + 1)
        report = await runtime.engine.collect_garbage()
        store = runtime.store
        published = config.publish.path / X86
        manifest = runtime.releases.state.load(X86)
    assert report.deleted == 0
    assert len(manifest.files) == 16
    for relpath, entry in manifest.files.items():
        assert store.has(entry.sha256), relpath
        assert sha256_file(published / relpath) == entry.sha256
