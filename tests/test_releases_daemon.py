"""The daemon mirrors packages and releases trees side by side: ctl status, metrics, the feed."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp

from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.releasegen import write_release, write_top
from mirrord.demo.repogen import simple_specs
from mirrord.publish.treeplan import is_index
from mirrord.shell.daemon import Daemon
from mirrord.sync.runtime import open_runtime
from tests.browser import table_rows
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import Mirror, run_mirrord, spawn_mirrord
from tests.lighttpd import Lighttpd
from tests.prom import promtool, samples, scrape, value
from tests.releasetree import tree_digests

KEY = ArchKey("v3.20", "main", "x86_64")
X86 = "v3.20/releases/x86_64"


async def test_daemon_publishes_releases_beside_packages_and_reports_them(mirror: Mirror) -> None:
    root = mirror.tree.root
    mirror.tree.put(KEY, simple_specs("a", 3))
    write_release(root, "v3.20", "x86_64", "3.20.3")
    write_top(root, "v3.20")
    with Lighttpd(root, mirror.tmp / "web") as web:
        config = _daemon_config(mirror, web.url)
        async with running_daemon(mirror, config) as daemon:
            assert daemon.runtime is not None
            await synced(daemon, 1)
            await daemon.runtime.releases.wait_for_passes(1)
            status = await human_ctl(daemon, "status")
            listen = daemon.config.metrics.listen
            text = await scrape(f"http://{listen}")
            async with aiohttp.ClientSession() as session, session.get(f"http://{listen}/") as got:
                page = await got.text()
    published = daemon.config.publish.path
    assert tree_digests(published / X86) == tree_digests(root / X86)
    assert (published / "v3.20/main/x86_64/APKINDEX.tar.gz").exists()
    # The status page shows the trees too, one row each.
    trees = {row[0][1]: row for row in table_rows(page, "trees")}
    assert sorted(trees) == ["MIRRORS.txt", X86]
    assert trees[X86][2] == ("lag ok", "current")
    assert trees[X86][-1] == ("last", "published")
    lines = status.splitlines()
    assert "releases trees (every 1h00m); latest-stable -> v3.20" in lines
    row = next(line for line in lines if line.startswith(X86))
    assert row.split()[-1] == "published"
    check = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert value(samples(text), "mirrord_tree_lag_seconds", branch="v3.20", arch="x86_64") == 0
    # The images' and netboot files' bytes count in the fetched bytes, under repo "releases".
    bodies = [p for p in (root / X86).rglob("*") if p.is_file() and not is_index(p.name)]
    fetched = {"branch": "v3.20", "repo": "releases", "arch": "x86_64", "outcome": "received"}
    assert value(samples(text), "mirrord_fetched_bytes_total", **fetched) == sum(
        p.stat().st_size for p in bodies
    )


async def test_a_reload_adds_and_removes_the_releases_section_without_a_restart(
    mirror: Mirror,
) -> None:
    root = mirror.tree.root
    mirror.tree.put(KEY, simple_specs("a", 2))
    write_release(root, "v3.20", "x86_64", "3.20.3")
    write_top(root, "v3.20")
    with Lighttpd(root, mirror.tmp / "web") as web:
        metrics = {"listen": "127.0.0.1:0"}
        config = daemon_config(mirror, KEY, origin={"url": web.url}, metrics=metrics)
        async with running_daemon(mirror, config) as daemon:
            assert daemon.runtime is not None
            await synced(daemon, 1)
            assert not (daemon.config.publish.path / X86).exists()
            releases = {"branches": ["v3.20"], "arches": ["x86_64"], "interval": 3600}
            daemon_config(mirror, KEY, origin={"url": web.url}, metrics=metrics, releases=releases)
            added = await ctl(daemon, "reload")
            async with asyncio.timeout(60):  # no pass at all would hang here
                await daemon.runtime.releases.wait_for_passes(1)
            assert tree_digests(daemon.config.publish.path / X86) == tree_digests(root / X86)
            daemon_config(mirror, KEY, origin={"url": web.url}, metrics=metrics)
            removed = await ctl(daemon, "reload")
            status = await human_ctl(daemon, "status")
            # a second reload: the idle releases service must still be there to wake
            daemon_config(mirror, KEY, origin={"url": web.url}, metrics=metrics, releases=releases)
            await ctl(daemon, "reload")
            async with asyncio.timeout(60):
                await daemon.runtime.releases.wait_for_passes(2)
            failures = daemon.supervisor.summary()["failures"]
    assert added["applied"] == ["releases"] and added["needs_restart"] == []
    assert removed["applied"] == ["releases"] and removed["needs_restart"] == []
    assert "releases trees" not in status
    # Removing the section stops the passes; what was published stays served.
    assert tree_digests(daemon.config.publish.path / X86) == tree_digests(root / X86)
    assert failures == {}
    assert mirror.logs.events("daemon.task.restarting") == []


def _daemon_config(mirror: Mirror, url: str) -> Path:
    releases = {"branches": ["v3.20"], "arches": ["x86_64"], "interval": 3600}
    return daemon_config(mirror, KEY, origin={"url": url}, releases=releases)


def _two_releases(mirror: Mirror, packages: int) -> Path:
    """The origin's tree: one package arch, releases 3.20.2 and 3.20.3, the top level."""
    root = mirror.tree.root
    mirror.tree.put(KEY, simple_specs("a", packages))
    for version in ("3.20.2", "3.20.3"):
        write_release(root, "v3.20", "x86_64", version)
    write_top(root, "v3.20")
    return root


def _image(path: str) -> bool:
    return "/releases/" in path and path.endswith((".iso", ".tar.gz", "-lts"))


async def test_release_images_wait_while_packages_download(mirror: Mirror) -> None:
    """Packages first: an image is asked for only once no package is in flight."""
    root = mirror.tree.root
    specs = simple_specs("a", 5, payload=2000)
    mirror.tree.put(KEY, specs)
    mirror.origin.add_fault(f"{KEY}/{specs[-1].filename}", Fault.stall())
    write_release(root, "v3.20", "x86_64", "3.20.3")
    write_top(root, "v3.20")
    config = mirror.config(KEY, releases={"branches": ["v3.20"], "arches": ["x86_64"]})
    reached = asyncio.Event()
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        downloader = runtime.releases.downloader
        assert downloader.yield_to is not None
        packages_idle = downloader.yield_to

        async def gate() -> None:
            reached.set()
            await packages_idle()

        downloader.yield_to = gate
        async with asyncio.TaskGroup() as group:
            packages = group.create_task(runtime.engine.run_pass())
            await mirror.origin.stalled.wait()
            trees = group.create_task(runtime.releases.run_pass())
            await reached.wait()  # the releases pass is at its first image
            assert not [
                r
                for r in mirror.origin.requests
                if "/releases/" in r.path and (r.path.endswith((".iso", ".tar.gz", "-lts")))
            ]
            mirror.origin.release_stalls.set()
    assert [r.outcome for r in packages.result()] == ["published"]
    assert trees.result().ok
    paths = [r.path for r in mirror.origin.requests]
    last_package = max(i for i, p in enumerate(paths) if p.endswith(".apk"))
    first_image = min(i for i, p in enumerate(paths) if _image(p))
    assert first_image > last_package, paths
    # The demo origin's JSON listings served the discovery (nginx autoindex_format json).
    assert "/v3.20/releases/x86_64/" in paths


async def test_mirrord_sync_refuses_a_mass_deletion_until_forced(mirror: Mirror) -> None:
    root = _two_releases(mirror, 3)
    with Lighttpd(root, mirror.tmp / "web") as web:
        releases = {"branches": ["v3.20"], "arches": ["x86_64"]}
        config = mirror.config_file(KEY, origin={"url": web.url}, releases=releases)
        published = mirror.tmp / "published"
        first = await asyncio.to_thread(run_mirrord, "sync", "--config", str(config))
        assert first.returncode == 0, first.stderr
        before = tree_digests(published / X86)
        # Leftovers of a crash in the middle of a publish, swept by the next pass.
        (published / X86 / ".mirrord-tmp-alpine-x.iso").write_bytes(b"partial")
        (published / ".mirrord-tmp-latest-stable").symlink_to("v3.20")
        for path in (root / X86).glob("alpine-*"):
            path.unlink()
        (root / X86 / "latest-releases.yaml").write_text("---\n")
        refused = await asyncio.to_thread(run_mirrord, "sync", "--config", str(config))
        assert refused.returncode == 1
        assert f"mirrord: {X86}: refused: refusing to publish" in refused.stderr
        assert tree_digests(published / X86) == before
        forced = await asyncio.to_thread(
            run_mirrord, "sync", "--config", str(config), "--force", X86
        )
    assert forced.returncode == 0, forced.stderr
    # Forced: the new yaml is published, the removed files wait out publish.grace.
    after = tree_digests(published / X86)
    assert after.keys() == before.keys()
    assert (published / X86 / "latest-releases.yaml").read_text() == "---\n"
    assert not (published / X86 / ".mirrord-tmp-alpine-x.iso").exists()
    assert not (published / ".mirrord-tmp-latest-stable").is_symlink()


async def test_ctl_forces_syncs_lists_and_rolls_back_a_releases_directory(mirror: Mirror) -> None:
    """With the daemon running: ctl sync, publish --force, snapshots, rollback, resume."""
    root = _two_releases(mirror, 2)
    published = mirror.tmp / "published" / X86
    with Lighttpd(root, mirror.tmp / "web") as web:
        config = _daemon_config(mirror, web.url)
        async with running_daemon(mirror, config) as daemon:
            assert daemon.runtime is not None
            releases = daemon.runtime.releases
            await releases.wait_for_passes(1)
            before = tree_digests(published)
            yaml = (root / X86 / "latest-releases.yaml").read_bytes()
            for path in (root / X86).glob("alpine-*"):
                path.unlink()
            (root / X86 / "latest-releases.yaml").write_text("---\n")
            synced_now = await human_ctl(daemon, "sync", X86)
            await releases.wait_for_passes(2)
            refused = releases.status[X86].outcome
            after_refusal = tree_digests(published)
            forced = await human_ctl(daemon, "publish", "--force", X86)
            await releases.wait_for_passes(3)
            listed = await human_ctl(daemon, "snapshots", X86)
            answer = await ctl(daemon, "snapshots", arch=X86)
            rolled = await human_ctl(daemon, "rollback", X86, "1")
            rolled_back = (published / "latest-releases.yaml").read_bytes()
            status = await human_ctl(daemon, "status")
            resumed = await human_ctl(daemon, "resume", X86)
            await releases.wait_for_passes(4)
            unknown = await spawn_ctl(daemon, "rollback", "v3.20/releases/s390x", "1")
    assert synced_now.strip() == f"sync: {X86}: syncing now"
    assert refused == "refused"
    assert after_refusal == before
    assert forced.startswith(f"publish: {X86} will be published once past the mass-deletion")
    lines = listed.splitlines()
    assert lines[0].startswith(f"snapshots of {X86} (roll back with")
    assert lines[2].split()[0] == "2" and lines[2].endswith("published now; forced")
    assert lines[3].split()[0] == "1"
    assert [(s["id"], s["current"], s["forced"]) for s in answer["snapshots"]] == [
        (2, True, True),
        (1, False, False),
    ]
    assert rolled.splitlines()[0] == f"rolled back {X86} to snapshot 1"
    assert rolled_back == yaml
    row = next(line for line in status.splitlines() if line.startswith(X86))
    assert row.split()[-1] == "held"
    assert resumed.strip() == f"resume: released the hold on {X86}; it syncs now"
    # Released, the origin's dropped images are refused again by the guard (not forced twice).
    assert releases.status[X86].outcome == "refused"
    assert (published / "latest-releases.yaml").read_bytes() == yaml
    assert unknown == (
        1,
        "mirrord: rollback refused (not_found): not configured: v3.20/releases/s390x",
    )


async def spawn_ctl(daemon: Daemon, *args: str) -> tuple[int | None, str]:
    """``mirrord ctl ARGS`` that may be refused: (exit code, stderr)."""
    socket = daemon.config.control.socket
    assert socket is not None
    process = await spawn_mirrord(
        "ctl", "--socket", str(socket), *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    return process.returncode, err.decode().strip()
