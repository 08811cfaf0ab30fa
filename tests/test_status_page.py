"""The status page in a real browser, its JSON twin, and what an origin may put on it.

The scene is a daemon mid-sync on a fake clock: a huge arch whose last
package never finishes downloading, and a small arch that is published.
Chromium loads the page from the daemon's metrics listener; the test reads
the rows and numbers from the DOM the browser built.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from mirrord.core.model import ArchKey
from mirrord.core.units import format_bytes
from mirrord.demo.repogen import PackageSpec, simple_specs
from mirrord.shell.daemon import Daemon
from mirrord.sync.status import FetchProgress
from tests.browser import dump_dom, screenshot, table_rows
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import Mirror
from tests.mosquitto import Mosquitto
from tests.prom import samples, scrape, value
from tests.seaweed import Seaweed
from tests.test_announce import announced
from tests.test_bucket import s3_section
from tests.test_cdn_purge import recording_server
from tests.test_mqtt_push import subscribed
from tests.test_scheduling import HUGE, LIMIT, SMALL, stall_huge_arch

HOUR = 3600.0
BEHIND = 2 * HOUR + 30  # the huge arch's origin index is this old: "2h00m" whatever the second
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def backdate_index(mirror: Mirror, key: ArchKey, seconds: float) -> None:
    """The origin's index says it changed ``seconds`` ago: that is how far behind we are."""
    index = mirror.tree.arch_dir(key) / "APKINDEX.tar.gz"
    moment = time.time() - seconds
    os.utime(index, (moment, moment))


@asynccontextmanager
async def mid_sync(mirror: Mirror, *extra: ArchKey) -> AsyncIterator[Daemon]:
    """The huge arch stalled on its last download; the small one (and ``extra``) synced."""
    stall_huge_arch(mirror)
    backdate_index(mirror, HUGE, BEHIND)
    mirror.tree.put(SMALL, simple_specs("s", 3))
    config = daemon_config(mirror, HUGE, SMALL, *extra, fetch={"read_timeout": 600})
    async with running_daemon(mirror, config) as daemon:
        async with asyncio.timeout(LIMIT):
            await synced(daemon, 1, SMALL, *extra)
            await mirror.origin.stalled.wait()
        try:
            yield daemon
        finally:
            mirror.origin.release_stalls.set()


def base_url(daemon: Daemon) -> str:
    return f"http://{daemon.config.metrics.listen}"


def rows_by_arch(dom: str) -> dict[str, dict[str, tuple[str, str]]]:
    columns = ["branch", "repo", "arch", "state", "snapshot", "packages", "origin_lm"]
    columns += ["published_lm", "lag", "last", "next_poll"]
    found = {}
    for row in table_rows(dom, "arches"):
        assert len(row) == len(columns), row
        cells = dict(zip(columns, row, strict=True))
        found["/".join(cells[c][1] for c in ("branch", "repo", "arch"))] = cells
    return found


def package_bytes(mirror: Mirror, key: ArchKey, specs: list[PackageSpec]) -> int:
    return sum((mirror.tree.arch_dir(key) / spec.filename).stat().st_size for spec in specs)


async def test_the_page_in_a_browser_shows_each_arch_mid_sync(
    mirror: Mirror, tmp_path: Path
) -> None:
    async with mid_sync(mirror) as daemon:
        huge_specs = mirror.tree.contents(HUGE)
        url = f"{base_url(daemon)}/status"
        dom = await dump_dom(url, tmp_path / "profile")
        shot = tmp_path / "status.png"
        await screenshot(url, tmp_path / "profile", shot)

    rows = rows_by_arch(dom)
    assert sorted(rows) == sorted([str(HUGE), str(SMALL)])
    huge, small = rows[str(HUGE)], rows[str(SMALL)]
    assert huge["state"] == ("state", "syncing")
    assert huge["snapshot"][1] == "-" and huge["packages"][1] == "0"
    assert huge["lag"] == ("lag warning", "2h00m")  # over an hour behind, under a day
    assert huge["last"][1] == "never synced"
    assert small["state"] == ("state", "idle")
    assert small["packages"] == ("num packages", "3")
    assert small["lag"] == ("lag ok", "current")
    assert re.fullmatch(r"published \(ok \S+ ago\)", small["last"][1]), small["last"]
    assert re.fullmatch(r"in (59m\d\ds|1h00m)", small["next_poll"][1]), small["next_poll"]

    progress = table_rows(dom, "progress")
    assert [row[0][1] for row in progress] == [str(HUGE)]
    _arch, _bar, files, size, rate, eta = (text for _css, text in progress[0])
    match = re.fullmatch(r"(\d+) of 40", files)
    assert match is not None and int(match.group(1)) < 40  # the stalled package is not in
    planned = package_bytes(mirror, HUGE, huge_specs)
    assert size.endswith(f" of {format_bytes(planned)}")
    # How many have landed, and so the rate, depends on the moment; the math is tested below.
    assert rate == "-" or rate.endswith("/s")
    assert eta == "-" or re.fullmatch(r"[\d.]+s|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh", eta)
    assert '<meta http-equiv="refresh" content="10">' in dom
    assert re.search(r'id="daemon-state"[^>]*>running<', dom)
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000


async def test_status_json_says_what_ctl_status_says(mirror: Mirror) -> None:
    async with mid_sync(mirror) as daemon:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base_url(daemon)}/status.json") as response:
                assert response.status == 200
                assert response.content_type == "application/json"
                page: dict[str, Any] = await response.json()
            async with session.get(f"{base_url(daemon)}/") as response:
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        socket: dict[str, Any] = await ctl(daemon, "status")

    # Time passes between the two reads and the huge arch's other downloads still land:
    # uptime, lag and those numbers are compared apart, or not at all.
    lags = []
    for report in (page, socket):
        del report["downloads"], report["rate"]["measured"]
        [huge] = report["sync"].pop("progress")
        assert huge["arch"] == str(HUGE) and huge["planned_files"] == 40
        assert 0 < report.pop("uptime") < LIMIT
        assert report.pop("tasks") > 0  # each connection has its own task
        lags.append({arch["arch"]: arch.pop("lag") for arch in report["arches"]})
    assert page == socket
    assert lags[0][str(SMALL)] == lags[1][str(SMALL)] == 0
    # Last-Modified has whole seconds: up to one less than the backdating.
    assert BEHIND - 1 <= lags[0][str(HUGE)] <= lags[1][str(HUGE)] < BEHIND + LIMIT
    arches = {arch["arch"]: arch for arch in page["arches"]}
    assert arches[str(HUGE)]["state"] == "syncing" and arches[str(SMALL)]["packages"] == 3


async def test_what_an_origin_says_is_escaped_and_a_day_behind_is_an_error(
    mirror: Mirror, tmp_path: Path
) -> None:
    hostile = ArchKey("v3.19", "main", "x86_64")
    # The package name is the origin's to choose; the refusal quotes it.
    mirror.tree.put(hostile, [PackageSpec(name="<script>x", version="1.0-r0")])
    backdate_index(mirror, hostile, 25.5 * HOUR)
    async with mid_sync(mirror, hostile) as daemon:
        assert daemon.runtime is not None
        assert "<script>x" in (daemon.runtime.book[hostile].last_error or "")
        async with aiohttp.ClientSession() as session, session.get(base_url(daemon)) as response:
            body = await response.text()
        dom = await dump_dom(f"{base_url(daemon)}/", tmp_path / "profile")

    assert "<script" not in body and "&lt;script&gt;x" in body
    assert "<script" not in dom  # the browser built no script element
    row = rows_by_arch(dom)[str(hostile)]
    assert row["lag"] == ("lag error", "1d01h")  # over a day behind
    assert row["last"][1].startswith("failed")
    assert "unsafe index: package '<script>x'" in row["last"][1]  # shown as text, intact


def test_progress_rate_and_eta_come_from_bytes_done_over_time() -> None:
    progress = FetchProgress(started=100.0, planned_files=4, planned_bytes=4000)
    assert progress.rate(100.5) is None and progress.eta(100.5) is None  # too soon to say
    progress.done_files, progress.done_bytes = 1, 1000
    assert progress.rate(110.0) == 100.0
    assert progress.eta(110.0) == 30.0


def downstream_rows(dom: str) -> dict[str, tuple[str, str]]:
    """Service -> (CSS class, text) of the Downstream table."""
    found = {}
    for row in table_rows(dom, "downstream"):
        (_, service), state = row
        found[service] = state
    return found


def without_times(text: str) -> str:
    return re.sub(r"[\d.]+s ago|\d+m\d\ds ago", "_ ago", text)


async def test_the_page_shows_each_downstream_service_as_ctl_status_does(
    mirror: Mirror, tmp_path: Path, broker: Mosquitto, seaweed: Seaweed, bucket: str
) -> None:
    mirror.tree.put(SMALL, simple_specs("s", 3))
    index = f"/{SMALL}/APKINDEX.tar.gz"
    async with recording_server() as cdn:
        cdn.statuses[f"/down{index}"] = [403]  # refused: given up at once
        config = daemon_config(
            mirror,
            SMALL,
            push={
                "mqtt": {"url": broker.url},
                "announce": {"url": broker.url, "topic_prefix": "rsync/t1.test"},
            },
            purge={"urls": [f"{cdn.url}/up", f"{cdn.url}/down"]},
            s3=s3_section(seaweed, bucket, mirror.tmp),
        )
        async with running_daemon(mirror, config) as daemon, asyncio.timeout(LIMIT):
            await synced(daemon, 1)
            await announced(daemon, 1)
            await subscribed(daemon)
            assert daemon.purger is not None
            await daemon.purger.wait_for_events(1)
            snapshot = (await ctl(daemon, "snapshots", arch=str(SMALL)))["snapshots"][0]["id"]
            await daemon.bucket_opened.wait()
            assert daemon.bucket_mirror is not None
            await daemon.bucket_mirror.wait_synced(SMALL, snapshot)
            dom = await dump_dom(f"{base_url(daemon)}/", tmp_path / "profile")
            text = await human_ctl(daemon, "status")
            found = samples(await scrape(base_url(daemon)))

    rows = downstream_rows(dom)
    assert list(rows) == ["push", "announce", "cdn purge", "s3 bucket"]
    css, push = rows["push"]
    assert css == "ok" and push.startswith(f"connected to {broker.url} since ")
    assert push.endswith(", 0 messages, last never")
    css, announce = rows["announce"]
    assert css == "ok" and "1 sent, 0 failed, 0 waiting" in announce
    assert announce.startswith(f"to {broker.url} on rsync/t1.test/<branch>/<arch>, connected")
    css, purge = rows["cdn purge"]
    assert css == "warning" and purge.startswith("3 purged, 1 failed after 1 publishes")
    assert "HTTP 403" in purge
    css, mirrored = rows["s3 bucket"]
    assert css == "ok"
    assert mirrored.startswith(f"s3://{bucket}/alpine/ at {seaweed.endpoint}: 1 arches in step")
    assert "last pass never" not in mirrored
    for label, (_, shown) in rows.items():  # the same words as ctl status, times aside
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{label}: "))
        assert without_times(line.split(": ", 1)[1]) == without_times(shown)

    labels = {"branch": SMALL.branch, "repo": SMALL.repo, "arch": SMALL.arch}
    assert value(found, "mirrord_bucket_lag_seconds", **labels) == 0
    assert value(found, "mirrord_bucket_last_success_timestamp_seconds", **labels) > 0
    assert value(found, "mirrord_cdn_purge_last_failure_timestamp_seconds", target="http") > 0
    assert value(found, "mirrord_announce_connected") == 1
