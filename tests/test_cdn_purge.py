"""CDN purge on publish: real Varnish in front of the shipped nginx, and a recording API."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from mirrord.core.clock import FakeClock, SystemClock
from mirrord.core.config import FastlyConfig, PurgeConfig, PurgeHookConfig
from mirrord.core.config.parse import parse_config
from mirrord.core.errors import ConfigError, ControlError
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.shell.cdn_purge import CdnPurger
from mirrord.shell.control.render import status
from mirrord.sync.feed import Published, PublishFeed
from mirrord.sync.purgeplan import purge_targets
from mirrord.sync.runtime import open_runtime
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import LogCapture, Mirror
from tests.prom import samples, scrape, value
from tests.reader import evolve
from tests.serving import ShippedNginx
from tests.varnish import Varnish

KEY = ArchKey("v3.20", "main", "x86_64")
INDEX = f"/{KEY}/APKINDEX.tar.gz"
TTL = 4.0  # Varnish's TTL for everything in these tests
POLL = 0.05


def get(port: int, path: str) -> tuple[bytes, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.status
        return response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


async def test_varnish_serves_the_new_index_at_once_when_purged_the_old_one_until_its_ttl_if_not(
    mirror: Mirror,
) -> None:
    specs = simple_specs("pkg", 12, arch="x86_64", payload=2000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY)
    root = config.publish.path
    root.mkdir(parents=True)
    with (
        ShippedNginx(root, mirror.tmp / "nginx") as nginx,
        Varnish(nginx.port, mirror.tmp / "varnish", TTL) as varnish,
    ):
        async with (
            open_runtime(config, log=mirror.logs.logger()) as runtime,
            asyncio.TaskGroup() as group,
        ):
            subscription = runtime.feed.subscribe("purge")
            purger = CdnPurger(
                PurgeConfig(urls=(varnish.url,)),
                root,
                subscription,
                metrics=Metrics(),
                clock=SystemClock(),
                log=mirror.logs.logger(),
            )
            purging = group.create_task(purger.run())

            async def publish(step: int) -> bytes:
                nonlocal specs
                if step:
                    specs = evolve(specs, step)
                    mirror.tree.put(KEY, specs)
                (result,) = await runtime.engine.run_pass()
                assert result.outcome == "published", result.error
                return (root / str(KEY) / "APKINDEX.tar.gz").read_bytes()

            first = await publish(0)
            await purger.wait_for_events(1)
            assert (await asyncio.to_thread(get, varnish.port, INDEX))[0] == first
            body, headers = await asyncio.to_thread(get, varnish.port, INDEX)
            assert (body, headers["x-cache"]) == (first, "HIT")
            listing, _ = await asyncio.to_thread(get, varnish.port, f"/{KEY}/")

            # With the purge: the next request after the publish gets the new index.
            second = await publish(1)
            assert second != first
            await purger.wait_for_events(2)
            body, headers = await asyncio.to_thread(get, varnish.port, INDEX)
            assert (body, headers["x-cache"]) == (second, "MISS")
            new_listing, _ = await asyncio.to_thread(get, varnish.port, f"/{KEY}/")
            assert new_listing != listing and b"added001" in new_listing
            assert (purger.stats.purged, purger.stats.failed) == (4, 0)  # index + listing, twice

            # Without it: the old index until its TTL runs out.
            runtime.feed.unsubscribe(subscription)
            purging.cancel()
            cached_before = time.monotonic()
            body, _ = await asyncio.to_thread(get, varnish.port, INDEX)
            assert body == second
            third = await publish(2)
            assert third != second
            body, headers = await asyncio.to_thread(get, varnish.port, INDEX)
            assert (body, headers["x-cache"]) == (second, "HIT")
            while body != third:
                assert time.monotonic() - cached_before < TTL + 30
                await asyncio.sleep(POLL)  # between requests: the TTL is a time
                body, _ = await asyncio.to_thread(get, varnish.port, INDEX)
            assert time.monotonic() - cached_before >= TTL


class Recorder:
    """A real HTTP server that records every request and answers with scripted statuses."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.statuses: dict[str, list[int]] = {}  # path -> statuses to answer, then 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, request.path, dict(request.headers), body))
        script = self.statuses.get(request.path)
        code = script.pop(0) if script else 200
        return web.Response(status=code, text=json.dumps({"status": "ok" if code == 200 else "no"}))

    def to(self, path: str) -> list[tuple[str, dict[str, str]]]:
        return [(m, h) for m, p, h, _ in self.requests if p == path]


@asynccontextmanager
async def recording_server(recorder: Recorder | None = None) -> AsyncIterator[Recorder]:
    recorder = recorder or Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder.url = f"http://127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


async def test_purges_by_url_by_surrogate_key_and_through_a_hook_with_retries(
    tmp_path: Path, logs: LogCapture
) -> None:
    root = tmp_path / "published"
    (root / "v3.20" / "main" / "x86_64").mkdir(parents=True)
    (root / "latest-stable").symlink_to("v3.20")
    token = "s3cret-fastly-token-0123"
    (tmp_path / "fastly-token").write_text(token + "\n")
    hook_out = tmp_path / "hook.out"
    feed = PublishFeed()
    metrics = Metrics()
    clock = FakeClock(autojump=True)
    async with recording_server() as cdn:
        config = PurgeConfig(
            urls=(f"{cdn.url}/edge",),
            soft=True,
            fastly=FastlyConfig("SVC123", tmp_path / "fastly-token", api_url=f"{cdn.url}/api"),
            hook=PurgeHookConfig(
                command=("sh", "-c", f'printf "%s\\n" "$@" >> {hook_out}', "hook")
            ),
            attempts=3,
        )
        purger = CdnPurger(
            config, root, feed.subscribe("purge"), metrics=metrics, clock=clock, log=logs.logger()
        )
        cdn.statuses[f"/edge{INDEX}"] = [503]  # transient: tried again
        async with asyncio.TaskGroup() as group:
            running = group.create_task(purger.run())
            feed.announce(Published(str(KEY), (f"{KEY}/APKINDEX.tar.gz",), 1.0))
            await purger.wait_for_events(1)
            cdn.statuses["/api/service/SVC123/purge"] = [403]  # permanent: given up at once
            feed.announce(Published(str(KEY), (f"{KEY}/APKINDEX.tar.gz",), 2.0))
            await purger.wait_for_events(2)
            running.cancel()

    alias = "latest-stable/main/x86_64"
    purged = [f"/edge{INDEX}", f"/edge/{KEY}/", f"/edge/{alias}/APKINDEX.tar.gz", f"/edge/{alias}/"]
    for path in purged:
        sent = cdn.to(path)
        assert [m for m, _ in sent] == ["PURGE"] * (3 if path == f"/edge{INDEX}" else 2)
        assert all(h["Fastly-Soft-Purge"] == "1" for _, h in sent)
    api = cdn.to("/api/service/SVC123/purge")
    assert [m for m, _ in api] == ["POST", "POST"]
    for _, headers in api:
        assert headers["Fastly-Key"] == token
        assert headers["Surrogate-Key"] == f"{KEY} {alias}"
        assert headers["Fastly-Soft-Purge"] == "1"
    lines = hook_out.read_text().splitlines()
    assert lines == [p.removeprefix("/edge/") for p in purged] * 2

    assert purger.stats.failed == 1 and "HTTP 403" in (purger.stats.last_failure or "")
    assert metrics.purges.labels(target="http", outcome="purged")._value.get() == 8
    assert metrics.purge_retries.labels(target="http")._value.get() == 1
    assert metrics.purges.labels(target="fastly", outcome="failed")._value.get() == 1
    assert metrics.purges.labels(target="hook", outcome="purged")._value.get() == 2
    assert clock.slept and clock.slept[0] >= 1.0  # the backoff, on the injected clock
    assert token not in logs.stream.getvalue()
    assert [e["target"] for e in logs.events("purge.failed")] == ["fastly"]

    line = next(
        x for x in status({"purge": purger.status()}, now=clock.time()).splitlines() if "cdn" in x
    )
    assert "11 purged, 1 failed after 2 publishes" in line and "HTTP 403" in line
    assert token not in json.dumps(purger.status())


def test_purge_targets_follow_top_level_aliases() -> None:
    event = Published("v3.20/main/x86_64", ("v3.20/main/x86_64/APKINDEX.tar.gz",), 0.0)
    targets = purge_targets(event, {"latest-stable": "v3.20", "edge-alias": "edge"})
    assert targets.paths == (
        "v3.20/main/x86_64/APKINDEX.tar.gz",
        "v3.20/main/x86_64/",
        "latest-stable/main/x86_64/APKINDEX.tar.gz",
        "latest-stable/main/x86_64/",
    )
    assert targets.keys == ("v3.20/main/x86_64", "latest-stable/main/x86_64")


BASE = {
    "origin": {"url": "https://dl-cdn.alpinelinux.org/alpine", "keys": "/k"},
    "repositories": [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
    "storage": {"path": "/s"},
    "publish": {"path": "/p"},
}


def test_the_purge_section_parses_and_names_its_errors() -> None:
    assert not parse_config(BASE).purge.enabled
    purge = parse_config(
        {
            **BASE,
            "purge": {
                "urls": ["https://dl-cdn.example.org/alpine/"],
                "soft": True,
                "fastly": {"service_id": "SVC", "token_file": "/etc/mirrord/fastly-token"},
                "hook": {"command": ["/usr/local/bin/purged"]},
                "attempts": 4,
            },
        }
    ).purge
    assert purge.urls == ("https://dl-cdn.example.org/alpine",)
    assert purge.fastly == FastlyConfig("SVC", Path("/etc/mirrord/fastly-token"))
    assert (purge.hook, purge.attempts, purge.soft) == (
        PurgeHookConfig(command=("/usr/local/bin/purged",)),
        4,
        True,
    )
    for section, where in (
        ({"hook": {"url": "http://h/x", "command": ["x"]}}, "purge.hook"),
        ({"fastly": {"service_id": "SVC"}}, "purge.fastly.token_file"),
        ({"urls": ["ftp://x"]}, "purge.urls[0]"),
        ({"urlz": []}, "purge"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config({**BASE, "purge": section})
        assert raised.value.key_path.startswith(where), raised.value


async def test_the_daemon_purges_after_each_publish_and_a_failing_cdn_never_holds_one_up(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("pkg", 3))
    async with recording_server() as cdn:
        cdn.statuses[f"/down{INDEX}"] = [500] * 100  # a CDN that never takes this purge
        purge = {"urls": [f"{cdn.url}/up", f"{cdn.url}/down"], "attempts": 2, "timeout": 5}
        config = daemon_config(mirror, KEY, purge=purge)
        async with running_daemon(mirror, config) as daemon:
            purger = daemon.purger
            assert purger is not None
            await synced(daemon, 1)
            async with asyncio.timeout(30):
                await purger.wait_for_events(1)
            mirror.tree.put(KEY, simple_specs("pkg", 4))
            await ctl(daemon, "sync")
            await synced(daemon, 2)
            async with asyncio.timeout(30):
                await purger.wait_for_events(2)
            status = await ctl(daemon, "status")
            found = samples(await scrape(f"http://{daemon.config.metrics.listen}"))
            text = await human_ctl(daemon, "status")

    assert [row["packages"] for row in status["arches"]] == [4]  # published all the same
    assert status["purge"]["purged"] == 6 and status["purge"]["failed"] == 2
    assert [m for m, _ in cdn.to(f"/up{INDEX}")] == ["PURGE", "PURGE"]
    assert [m for m, _ in cdn.to(f"/down{INDEX}")] == ["PURGE"] * 4  # two tries, twice
    assert value(found, "mirrord_cdn_purges_total", target="http", outcome="purged") == 6
    assert value(found, "mirrord_cdn_purges_total", target="http", outcome="failed") == 2
    assert value(found, "mirrord_cdn_purge_retries_total", target="http") == 2
    assert "cdn purge: 6 purged, 2 failed after 2 publishes" in text


async def test_ctl_purge_purges_a_path_by_hand_and_says_what_each_target_did(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("pkg", 3))
    root = mirror.tmp / "published"
    root.mkdir(parents=True)
    with (
        ShippedNginx(root, mirror.tmp / "nginx") as nginx,
        Varnish(nginx.port, mirror.tmp / "varnish", ttl=3600) as varnish,
    ):
        async with recording_server() as cdn:
            cdn.statuses[f"/down{INDEX}"] = [403] * 10  # a CDN that refuses: given up at once
            purge = {"urls": [varnish.url, f"{cdn.url}/down"], "attempts": 2}
            async with running_daemon(mirror, daemon_config(mirror, KEY, purge=purge)) as daemon:
                await synced(daemon, 1)
                purger = daemon.purger
                assert purger is not None
                async with asyncio.timeout(30):
                    await purger.wait_for_events(1)
                index = (root / str(KEY) / "APKINDEX.tar.gz").read_bytes()
                await asyncio.to_thread(get, varnish.port, INDEX)
                body, headers = await asyncio.to_thread(get, varnish.port, INDEX)
                assert (body, headers["x-cache"]) == (index, "HIT")

                text = await human_ctl(daemon, "purge", f"/{KEY}/APKINDEX.tar.gz")
                body, headers = await asyncio.to_thread(get, varnish.port, INDEX)
                assert (body, headers["x-cache"]) == (index, "MISS")  # purged by hand
                reply = await ctl(daemon, "purge", paths=[f"{KEY}/"])
                with pytest.raises(ControlError, match="not a path in the published tree"):
                    await ctl(daemon, "purge", paths=["v3.20/../../etc/passwd"])

    assert text.splitlines() == [
        "purge: 1 purged, 1 failed",
        f"  http    {varnish.url}{INDEX}: purged",
        f'  http    {cdn.url}/down{INDEX}: failed: HTTP 403: {{"status": "no"}}',
    ]
    assert reply == {
        "paths": [f"{KEY}/"],
        "results": [
            {"target": "http", "where": f"{varnish.url}/{KEY}/", "error": None},
            {"target": "http", "where": f"{cdn.url}/down/{KEY}/", "error": None},
        ],
    }
    assert [m for m, _ in cdn.to(f"/down{INDEX}")] == ["PURGE", "PURGE"]  # publish, by hand
