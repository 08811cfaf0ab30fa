"""config/rsyncd-mirrord.conf, run by a real rsync daemon: a T2 pulls during publishes."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

from mirrord.alpine.signing import Keyring
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.publish.treecheck import check_tree
from mirrord.sync.runtime import open_runtime
from tests.helpers import Mirror
from tests.reader import evolve
from tests.serving import shipped_rsyncd, t2_pull

KEY = ArchKey("v3.20", "main", "x86_64")
PUBLISHES = 6


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).digest()
        for p in root.rglob("*")
        if p.is_file()
    }


async def test_a_t2_pulling_from_the_shipped_rsyncd_during_publishes_ends_consistent(
    mirror: Mirror,
) -> None:
    specs = simple_specs("pkg", 20, arch="x86_64", payload=3000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY)
    config.publish.path.mkdir(parents=True)
    keyring = Keyring.load(mirror.keys)
    t2, staging = mirror.tmp / "t2", mirror.tmp / "t2-indexes"
    pulls: list[list[str]] = []  # each pull's problems, as the tree checker saw them
    pulled = threading.Condition()
    stop = threading.Event()

    def pull_until_stopped(url: str) -> None:
        while not stop.is_set():
            t2_pull(url + "/", t2, staging)
            # Before the first publish a pull can bring packages and no index yet.
            index = t2.joinpath(*KEY.parts, "APKINDEX.tar.gz")
            report = check_tree(t2, [KEY], keyring) if index.exists() else None
            with pulled:
                pulls.append(report.problems if report is not None else ["nothing yet"])
                pulled.notify_all()

    def wait_for_pulls(count: int) -> bool:
        with pulled:
            return pulled.wait_for(lambda: len(pulls) >= count, 60)

    with shipped_rsyncd(config.publish.path, mirror.tmp / "rsyncd") as rsyncd:
        async with (
            open_runtime(config, log=mirror.logs.logger()) as runtime,
            asyncio.TaskGroup() as group,
        ):
            group.create_task(asyncio.to_thread(pull_until_stopped, rsyncd.url))
            try:
                for step in range(PUBLISHES):
                    if step:
                        specs = evolve(specs, step)
                        mirror.tree.put(KEY, specs)
                    (result,) = await runtime.engine.run_pass()
                    assert result.outcome == "published", result.error
                    # Each publish overlaps pulls: two more start after it.
                    assert await asyncio.to_thread(wait_for_pulls, len(pulls) + 2)
            finally:
                stop.set()
        # Afterwards, one more pull (a T2's next run): exactly the T1's tree.
        await asyncio.to_thread(t2_pull, rsyncd.url + "/", t2, staging)

    report = check_tree(t2, [KEY], keyring)
    assert report.ok, report.problems
    assert report.files == len(specs)
    assert files_of(t2) == files_of(config.publish.path)
    assert not any(p.name.startswith(".mirrord-") for p in t2.rglob("*"))
    # Files first on the T1, and on the T2 indexes fetched first and installed
    # last: every file a fetched index lists was on the T1 when the packages
    # pass started, so every pulled tree was consistent, not just the last.
    assert len(pulls) >= 2 * PUBLISHES
    assert [p for p in pulls if p and p != ["nothing yet"]] == []
