"""The daemon mirrors packages and releases trees side by side: ctl status, metrics, the feed."""

from __future__ import annotations

import asyncio
import subprocess

from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.releasegen import write_release, write_top
from mirrord.demo.repogen import simple_specs
from mirrord.sync.runtime import open_runtime
from tests.daemon_harness import daemon_config, human_ctl, running_daemon, synced
from tests.helpers import Mirror, run_mirrord
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
        config = daemon_config(
            mirror,
            KEY,
            origin={"url": web.url},
            releases={"branches": ["v3.20"], "arches": ["x86_64"], "interval": 3600},
        )
        async with running_daemon(mirror, config) as daemon:
            assert daemon.runtime is not None
            await synced(daemon, 1)
            await daemon.runtime.releases.wait_for_passes(1)
            status = await human_ctl(daemon, "status")
            listen = daemon.config.metrics.listen
            text = await scrape(f"http://{listen}")
    published = daemon.config.publish.path
    assert tree_digests(published / X86) == tree_digests(root / X86)
    assert (published / "v3.20/main/x86_64/APKINDEX.tar.gz").exists()
    lines = status.splitlines()
    assert "releases trees (every 1h00m); latest-stable -> v3.20" in lines
    row = next(line for line in lines if line.startswith(X86))
    assert row.split()[-1] == "published"
    check = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert value(samples(text), "mirrord_tree_lag_seconds", branch="v3.20", arch="x86_64") == 0


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
    root = mirror.tree.root
    mirror.tree.put(KEY, simple_specs("a", 3))
    for version in ("3.20.2", "3.20.3"):
        write_release(root, "v3.20", "x86_64", version)
    write_top(root, "v3.20")
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
        assert f"mirrord: {X86}: refused: {X86}: refusing to publish" in refused.stderr
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
