"""No arch waits for another, and lag never lies: a real daemon, a real origin.

A huge arch whose download never ends (a stalled package) stays "syncing"
while a small arch is polled on its own timer, publishes each new generation
of its origin, and answers ``ctl sync`` at once. Lag is read where operators
read it: the metrics endpoint, ``ctl status`` and the alert rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import yaml

from mirrord.core.clock import FakeClock
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import PackageSpec, simple_specs
from mirrord.shell.daemon import Daemon
from mirrord.sync.status import Phase
from tests.daemon_harness import ctl, daemon_config, running_daemon, synced
from tests.helpers import REPO_ROOT, Mirror
from tests.prom import promtool, samples, scrape, value

HUGE = ArchKey("v3.21", "main", "x86_64")
SMALL = ArchKey("v3.20", "main", "x86_64")
LIMIT = 30.0  # seconds any single wait may take before the test fails instead of hanging


def labels(key: ArchKey) -> dict[str, str]:
    return {"branch": key.branch, "repo": key.repo, "arch": key.arch}


def origin_index_sha(mirror: Mirror, key: ArchKey) -> str:
    return hashlib.sha256((mirror.tree.arch_dir(key) / "APKINDEX.tar.gz").read_bytes()).hexdigest()


def stall_huge_arch(mirror: Mirror, stalled: int = 1) -> list[PackageSpec]:
    """A huge arch whose last ``stalled`` packages never finish downloading (until released)."""
    specs = simple_specs("huge", 40, payload=2000)
    mirror.tree.put(HUGE, specs)
    for spec in specs[-stalled:]:
        mirror.origin.add_fault(f"{HUGE}/{spec.filename}", Fault.stall())
    return specs


async def published(daemon: Daemon, key: ArchKey, sha256: str) -> None:
    assert daemon.scheduler is not None and daemon.runtime is not None
    status = daemon.runtime.book[key]
    async with asyncio.timeout(LIMIT):
        await daemon.scheduler.wait_until(lambda: status.published_sha256 == sha256)


async def test_a_small_arch_publishes_every_generation_while_a_huge_one_downloads(
    mirror: Mirror,
) -> None:
    stall_huge_arch(mirror)
    mirror.tree.put(SMALL, simple_specs("s", 3))
    # interval 1 s: the small arch's own timer, not a pass, brings each generation in.
    config = daemon_config(
        mirror,
        HUGE,
        SMALL,
        interval=1,
        fetch={"read_timeout": 600},
    )
    async with running_daemon(mirror, config) as daemon:
        assert daemon.scheduler is not None and daemon.runtime is not None
        book = daemon.runtime.book
        await mirror.origin.stalled.wait()
        listen = daemon.config.metrics.listen
        for generation in range(4, 7):
            mirror.tree.put(SMALL, simple_specs("s", generation))
            await published(daemon, SMALL, origin_index_sha(mirror, SMALL))
            # Published while the huge arch is still downloading, not after "the pass".
            assert daemon.scheduler.syncing == [HUGE] and book[HUGE].phase is Phase.SYNCING
            assert book[HUGE].published_sha256 is None
            found = samples(await scrape(f"http://{listen}"))
            assert value(found, "mirrord_mirror_lag_seconds", **labels(SMALL)) == 0
            assert value(found, "mirrord_mirror_lag_seconds", **labels(HUGE)) > 0
            assert value(found, "mirrord_arch_syncing", **labels(HUGE)) == 1
            assert value(found, "mirrord_arch_syncing", **labels(SMALL)) == 0
            assert value(found, "mirrord_published_packages", **labels(SMALL)) == generation
            rows = {row["arch"]: row for row in (await ctl(daemon, "status"))["arches"]}
            assert rows[str(HUGE)]["state"] == "syncing" and rows[str(HUGE)]["lag"] > 0
            assert rows[str(HUGE)]["snapshot"] is None
            assert rows[str(SMALL)]["packages"] == generation and rows[str(SMALL)]["lag"] == 0
        assert book[SMALL].runs >= 4  # polled again and again while the huge arch waited
        mirror.origin.release_stalls.set()
        async with asyncio.timeout(LIMIT):
            await synced(daemon, 1, HUGE)
        last = book[HUGE].last_result
        assert last is not None and str(last.outcome) == "published"
        assert book[HUGE].lag(book[HUGE].published_at or 0) == 0


async def test_ctl_sync_during_another_arch_download_is_served_at_once(mirror: Mirror) -> None:
    stall_huge_arch(mirror)
    mirror.tree.put(SMALL, simple_specs("s", 3))
    config = daemon_config(mirror, HUGE, SMALL, fetch={"read_timeout": 600})  # interval 1 h
    async with running_daemon(mirror, config) as daemon:
        assert daemon.scheduler is not None and daemon.runtime is not None
        book = daemon.runtime.book
        await synced(daemon, 1, SMALL)
        await mirror.origin.stalled.wait()

        mirror.tree.put(SMALL, simple_specs("s", 5))
        answer = await ctl(daemon, "sync", arches=[str(SMALL)])
        assert answer["arches"] == {str(SMALL): "started"}
        await published(daemon, SMALL, origin_index_sha(mirror, SMALL))
        assert daemon.scheduler.syncing == [HUGE]

        # The huge arch is busy: exactly one more sync is queued, however often it is asked.
        assert (await ctl(daemon, "sync", arches=[str(HUGE)]))["arches"] == {str(HUGE): "queued"}
        assert (await ctl(daemon, "sync", arches=[str(HUGE)]))["arches"] == {
            str(HUGE): "already_queued"
        }
        rows = {row["arch"]: row for row in (await ctl(daemon, "status"))["arches"]}
        assert rows[str(HUGE)]["rerun_queued"] is True
        mirror.origin.release_stalls.set()
        async with asyncio.timeout(LIMIT):
            await synced(daemon, 2, HUGE)
        assert book[HUGE].runs == 2
        assert book[HUGE].rerun_queued is False
        assert daemon.scheduler.syncing == []
    # One sync of the huge arch after its first, not one per request.
    done = [e for e in mirror.logs.events("sync.arch.done") if e["arch"] == str(HUGE)]
    assert [e["outcome"] for e in done] == ["published", "unchanged"]


async def test_polls_get_through_while_every_download_connection_is_busy(mirror: Mirror) -> None:
    """Index polls have connections of their own: a huge arch cannot starve them."""
    mirror.tree.put(SMALL, simple_specs("s", 10))
    fetch = {"read_timeout": 600, "concurrency": 8, "per_host": 8}
    config = daemon_config(mirror, HUGE, SMALL, interval=1, fetch=fetch)
    async with running_daemon(mirror, config) as daemon:
        assert daemon.runtime is not None
        await synced(daemon, 1, SMALL)
        # Only now the huge arch appears (its polls answered 404 so far): were it there
        # from the start, its stalled downloads could take every connection before the
        # small arch's first packages, and that first sync would wait for read_timeout.
        stall_huge_arch(mirror, stalled=8)  # as many as fetch.concurrency and per_host
        async with asyncio.timeout(LIMIT):
            await mirror.origin.stalled.wait()
        mirror.tree.put(SMALL, simple_specs("s", 9))  # a new index, nothing to download
        await published(daemon, SMALL, origin_index_sha(mirror, SMALL))
        assert daemon.runtime.book[SMALL].runs >= 2
        mirror.origin.release_stalls.set()


async def test_lag_of_a_slow_arch_grows_on_the_clock_and_fires_the_alert(
    mirror: Mirror, tmp_path: Path
) -> None:
    """Fake clock: four hours pass while the huge arch downloads; the small one is current."""
    stall_huge_arch(mirror)
    mirror.tree.put(SMALL, simple_specs("s", 3))
    clock = FakeClock()
    config = daemon_config(
        mirror,
        HUGE,
        SMALL,
        interval=1800,
        fetch={"read_timeout": 600},
    )
    step = 300.0
    lags: dict[ArchKey, list[float]] = {HUGE: [], SMALL: []}
    async with running_daemon(mirror, config, clock=clock) as daemon:
        assert daemon.scheduler is not None and daemon.runtime is not None
        await synced(daemon, 1, SMALL)
        await mirror.origin.stalled.wait()
        listen = daemon.config.metrics.listen
        for minute in range(0, 4 * 60 + 1, 5):
            if minute and minute % 30 == 0:  # the small arch's poll, on its own timer, is done
                await synced(daemon, 1 + minute // 30, SMALL)
            found = samples(await scrape(f"http://{listen}"))
            for key in lags:
                lags[key].append(value(found, "mirrord_mirror_lag_seconds", **labels(key)))
            if minute == 45:  # a new generation, for the poll at 60
                mirror.tree.put(SMALL, simple_specs("s", 4))
            clock.advance(step)
        assert daemon.scheduler.syncing == [HUGE]
        assert daemon.runtime.book[SMALL].published_sha256 == origin_index_sha(mirror, SMALL)
        mirror.origin.release_stalls.set()

    assert lags[HUGE] == [minute * 60.0 for minute in range(0, 4 * 60 + 1, 5)]
    assert set(lags[SMALL]) == {0.0}
    # The alert rule as shipped, fed what was scraped (one sample per 5 min), fires for the
    # huge arch alone once it has been over 3 h behind for 10 min.
    series = [
        {
            "series": f'mirrord_mirror_lag_seconds{{job="mirrord", branch="{key.branch}", '
            f'repo="{key.repo}", arch="{key.arch}"}}',
            "values": " ".join(f"{lag:g}" for lag in lags[key]),
        }
        for key in (HUGE, SMALL)
    ]
    huge_alert = {
        "exp_labels": {"severity": "warning", "job": "mirrord", **labels(HUGE)},
        "exp_annotations": {
            "summary": f"{HUGE} is 3h 15m 0s behind the origin",
            "description": "The origin has had a newer index for over 3 hours "
            "and this mirror has not published it.",
        },
    }
    rules_test = {
        "rule_files": [str(REPO_ROOT / "config" / "mirrord-alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "5m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "3h", "alertname": "MirrordLagHigh", "exp_alerts": []},
                    {
                        "eval_time": "3h15m",
                        "alertname": "MirrordLagHigh",
                        "exp_alerts": [huge_alert],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "lag.test.yml"
    path.write_text(yaml.safe_dump(rules_test, sort_keys=False))
    check = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
