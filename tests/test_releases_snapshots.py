"""Snapshots and rollback per releases directory: remembered, bounded, kept by gc."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mirrord.core.config import Config
from mirrord.core.errors import ControlError
from mirrord.demo.releasegen import write_release, write_top
from mirrord.sync.feed import Published
from mirrord.sync.releases import TreePass
from mirrord.sync.runtime import Runtime, open_runtime
from tests.helpers import LogCapture
from tests.lighttpd import Lighttpd
from tests.releasetree import releases_config, releases_pass, set_mtime, tree_digests

X86 = "v3.20/releases/x86_64"
YAML = "latest-releases.yaml"
T0 = 1_700_000_000


def _release(origin: Path, version: str, step: int) -> None:
    """A new release on the origin; its listing's mtimes move on (netboot has no checksum)."""
    write_release(origin, "v3.20", "x86_64", version)
    write_top(origin, "v3.20")
    set_mtime(list(origin.rglob("*")), T0 + step * 100)


async def _pass(runtime: Runtime) -> TreePass:
    result = await releases_pass(runtime)
    assert result.ok, [(o.directory, o.error) for o in result.outcomes]
    return result


@asynccontextmanager
async def _mirroring(
    tmp_path: Path, keys_dir: Path, **publish: Any
) -> AsyncIterator[tuple[Path, Config, Runtime]]:
    """An origin with release 3.20.2 served by lighttpd, and a runtime that mirrored it."""
    origin = tmp_path / "origin"
    _release(origin, "3.20.2", 1)
    with Lighttpd(origin, tmp_path / "web") as web:
        trees = {"branches": ["v3.20"], "arches": ["x86_64"]}
        config = releases_config(tmp_path, web.url, keys_dir, trees, **publish)
        async with open_runtime(config, log=LogCapture().logger()) as runtime:
            await _pass(runtime)
            yield origin, config, runtime


def _outcome(result: TreePass) -> str:
    return next(o.outcome for o in result.outcomes if o.directory == X86)


async def test_rollback_publishes_a_remembered_snapshot_and_holds_it(
    tmp_path: Path, keys_dir: Path
) -> None:
    async with _mirroring(tmp_path, keys_dir) as (origin, config, runtime):
        published = config.publish.path / X86
        releases = runtime.releases
        first = tree_digests(published)
        _release(origin, "3.20.3", 2)
        await _pass(runtime)
        second = tree_digests(published)
        assert second[YAML] != first[YAML]
        assert second["netboot/vmlinuz-lts"] != first["netboot/vmlinuz-lts"]
        history = await releases.history_of(X86)
        assert [s.id for s in history] == [1, 2]
        assert await releases.current_snapshot(X86) == 2
        assert set(history[0].files) == set(first)

        events: list[Published] = []
        subscription = runtime.feed.subscribe("test")
        snapshot = await releases.rollback(X86, 1)
        while not subscription.queue.empty():
            events.append(subscription.queue.get_nowait())
        runtime.feed.unsubscribe(subscription)
        rolled_back = tree_digests(published)
        received = releases.downloader.received
        held = await _pass(runtime)
        after_held = tree_digests(published)
        releases.release(X86)
        again = await _pass(runtime)
        current = await releases.current_snapshot(X86)
        ids = [s.id for s in await releases.history_of(X86)]
        manifest = releases.state.load(X86)

    assert snapshot.id == 1
    # The first snapshot's bytes are served again; 3.20.3's images wait out the grace.
    assert rolled_back == {**second, **first}
    assert rolled_back[YAML] == first[YAML]
    assert rolled_back["netboot/vmlinuz-lts"] == first["netboot/vmlinuz-lts"]
    # Announced once the yaml is live: the directory's sidecars, the yaml last.
    assert [e.directory for e in events] == [X86]
    assert events[0].changed[-1] == f"{X86}/{YAML}"
    # Held: the next pass publishes nothing there (and downloads nothing).
    assert _outcome(held) == "held"
    assert after_held == rolled_back
    # Released: the origin's state again, the same snapshot as before (not a copy).
    assert _outcome(again) == "published"
    assert tree_digests(published) == second
    # Only netboot/ came again (no checksum names its bytes); no image was downloaded.
    assert releases.downloader.received - received == 3 * 4096
    assert (current, ids) == (2, [1, 2])
    assert manifest.gone_since == {}


async def test_gc_keeps_remembered_snapshots_the_history_is_bounded_and_a_lost_object_refuses(
    tmp_path: Path, keys_dir: Path
) -> None:
    # grace 0: gc keeps nothing for being recent, only what is needed.
    async with _mirroring(tmp_path, keys_dir, grace=0, keep_snapshots=2) as (
        origin,
        config,
        runtime,
    ):
        published = config.publish.path / X86
        releases = runtime.releases
        first = tree_digests(published)
        yaml_of_1 = releases.state.load(X86).files[YAML].sha256
        _release(origin, "3.20.3", 2)
        await _pass(runtime)
        await runtime.engine.collect_garbage()  # snapshot 1 is remembered: kept
        await releases.rollback(X86, 1)
        rolled_back = tree_digests(published)
        releases.release(X86)
        _release(origin, "3.20.4", 3)
        await _pass(runtime)
        ids = [s.id for s in await releases.history_of(X86)]
        # Snapshot 1 forgotten (keep_snapshots 2): its own objects are garbage now.
        kept_before_gc = runtime.store.has(yaml_of_1)
        report = await runtime.engine.collect_garbage()
        kept_after_gc = runtime.store.has(yaml_of_1)
        with pytest.raises(ControlError, match=f"{X86} has no snapshot 1"):
            await releases.rollback(X86, 1)
        # Snapshot 2's yaml lost from the store (a damaged disk, a repair):
        # the rollback says so and changes nothing.
        yaml_of_2 = (await releases.history_of(X86))[0].files[YAML].sha256
        runtime.store.object_path(yaml_of_2).unlink()
        before = tree_digests(published)
        with pytest.raises(ControlError, match="no longer complete in the store") as refused:
            await releases.rollback(X86, 2)
        after = tree_digests(published)
        current = await releases.current_snapshot(X86)
    assert (kept_before_gc, kept_after_gc) == (True, False)
    assert report.deleted > 0
    assert rolled_back[YAML] == first[YAML]
    assert rolled_back["netboot/initramfs-lts"] == first["netboot/initramfs-lts"]
    assert ids == [2, 3]
    assert YAML in str(refused.value)
    assert after == before
    assert current == 3
    assert (
        hashlib.sha256((published / YAML).read_bytes()).hexdigest()
        == hashlib.sha256((origin / X86 / YAML).read_bytes()).hexdigest()
    )
