"""The daemon mirrors packages and releases trees side by side: ctl status, metrics, the feed."""

from __future__ import annotations

import subprocess

from mirrord.core.model import ArchKey
from mirrord.demo.releasegen import write_release, write_top
from mirrord.demo.repogen import simple_specs
from tests.daemon_harness import daemon_config, human_ctl, running_daemon, synced
from tests.helpers import Mirror
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
