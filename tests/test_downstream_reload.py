"""A reload restarts the downstream services whose settings changed: real endpoints, real broker.

The CDN is a real aiohttp server recording every request (``Recorder``); the
announcements go to a real mosquitto. Every wait is on the services' own
conditions, bounded by LIMIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from mirrord.core.config.parse import parse_config
from mirrord.core.errors import ControlError
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.shell.cdn_purge import CdnPurger
from mirrord.shell.daemon import Daemon
from mirrord.shell.downstream import fingerprint, restarts
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import Mirror
from tests.mosquitto import Mosquitto
from tests.nginx import free_port
from tests.seaweed import Seaweed
from tests.test_announce import announced, listening, receive
from tests.test_bucket import bucket_keys, s3_section
from tests.test_cdn_purge import Recorder, recording_server
from tests.test_mqtt_push import push, subscribed

KEY = ArchKey("v3.20", "main", "x86_64")
INDEX = f"/{KEY}/APKINDEX.tar.gz"
LIMIT = 30.0
BASE: dict[str, Any] = {
    "origin": {"url": "http://127.0.0.1:1/alpine", "keys": "/k"},
    "repositories": [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
    "storage": {"path": "/s"},
    "publish": {"path": "/p"},
}


def test_a_reload_restarts_the_services_whose_section_or_secret_changed(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    fastly = {"service_id": "SVC", "token_file": str(token)}
    plain = parse_config(BASE)
    purging = parse_config({**BASE, "purge": {"urls": ["http://cdn/"], "fastly": fastly}})
    announcing = parse_config({**BASE, "push": {"announce": {"url": "mqtt://broker"}}})
    then = {"purge": fingerprint((token,))}

    assert restarts(plain, plain, {}, {}) == []
    assert restarts(plain, purging, {}, then) == ["purge"]  # turned on
    assert restarts(purging, plain, then, {}) == ["purge"]  # turned off
    assert restarts(purging, purging, then, then) == []
    assert restarts(plain, announcing, {}, {}) == ["announce"]
    token.write_text("two\n")  # rotated: the same settings, another secret
    assert restarts(purging, purging, then, {"purge": fingerprint((token,))}) == ["purge"]
    token.unlink()
    assert fingerprint((token,))[0][1].startswith("unreadable: ")
    assert "one" not in repr(then)  # digests only


class Gate(Recorder):
    """A recorder whose answers to ``held`` paths wait until ``opened`` (a CDN that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if request.path in self.held:
            self.arrived.set()
            await self.opened.wait()
        return await super().handle(request)


@asynccontextmanager
async def cdn_server() -> AsyncIterator[Gate]:
    gate = Gate()
    async with recording_server(gate):
        try:
            yield gate
        finally:
            gate.opened.set()  # before the server shuts down: it waits for its handlers


def configure(mirror: Mirror, **sections: Any) -> Path:
    """The daemon's configuration file, (re)written; its metrics port stays (it needs a restart)."""
    path = mirror.tmp / "mirrord.yaml"
    listen = f"127.0.0.1:{free_port()}"
    if path.exists():
        listen = yaml.safe_load(path.read_text())["metrics"]["listen"]
    return daemon_config(mirror, KEY, metrics={"listen": listen}, **sections)


def purger_of(daemon: Daemon) -> CdnPurger:
    assert daemon.purger is not None
    return daemon.purger


async def publish(mirror: Mirror, daemon: Daemon, count: int) -> None:
    """Publish a new index (``count`` packages, the ``count - 2``-th sync) and wait for it."""
    mirror.tree.put(KEY, simple_specs("p", count))
    await ctl(daemon, "sync")
    await synced(daemon, count - 2)


async def purged(purger: CdnPurger, events: int) -> None:
    async with asyncio.timeout(LIMIT):
        await purger.wait_for_events(events)


async def test_a_reload_points_purges_at_new_urls_rereads_the_token_and_refuses_a_bad_section(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("p", 3))
    token = mirror.tmp / "fastly-token"
    token.write_text("first-token\n")
    async with cdn_server() as cdn:

        def config(edge: str | None, urls: list[str] | None = None) -> Path:
            if edge is None:
                return configure(mirror)
            fastly = {"service_id": "SVC", "token_file": str(token), "api_url": f"{cdn.url}/api"}
            purge = {"urls": urls or [f"{cdn.url}/{edge}"], "fastly": fastly, "attempts": 1}
            return configure(mirror, purge=purge)

        def keys_sent() -> list[str]:
            return [h["Fastly-Key"] for _, h in cdn.to("/api/service/SVC/purge")]

        async with running_daemon(mirror, config("old")) as daemon:
            first = purger_of(daemon)
            await synced(daemon, 1)
            await purged(first, 1)
            assert [m for m, _ in cdn.to(f"/old{INDEX}")] == ["PURGE"]

            config("new")
            reply = await ctl(daemon, "reload")
            assert reply == {"applied": ["purge.urls"], "needs_restart": [], "restarted": ["purge"]}
            second = purger_of(daemon)
            assert second is not first
            await publish(mirror, daemon, 4)
            await purged(second, 1)
            assert [m for m, _ in cdn.to(f"/new{INDEX}")] == ["PURGE"]
            assert len(cdn.to(f"/old{INDEX}")) == 1  # the old target hears no more

            token.write_text("second-token\n")  # rotated; the configuration is the same
            assert "restarted services: purge" in await human_ctl(daemon, "reload")
            await publish(mirror, daemon, 5)
            await purged(purger_of(daemon), 1)
            assert keys_sent() == ["first-token", "first-token", "second-token"]
            assert await human_ctl(daemon, "reload") == "reload: nothing changed\n"

            kept = purger_of(daemon)
            config("new", urls=["ftp://cdn.example/"])
            with pytest.raises(ControlError, match=r"purge\.urls"):
                await ctl(daemon, "reload")
            assert daemon.purger is kept  # the old section keeps purging
            await publish(mirror, daemon, 6)
            await purged(kept, 2)
            assert len(cdn.to(f"/new{INDEX}")) == 3

            config(None)  # purging turned off by reload, then on again
            assert (await ctl(daemon, "reload"))["restarted"] == ["purge"]
            assert daemon.purger is None
            requests = len(cdn.requests)
            await publish(mirror, daemon, 7)
            assert len(cdn.requests) == requests
            config("again")
            assert (await ctl(daemon, "reload"))["restarted"] == ["purge"]
            await publish(mirror, daemon, 8)
            await purged(purger_of(daemon), 1)
            assert [m for m, _ in cdn.to(f"/again{INDEX}")] == ["PURGE"]

    done = mirror.logs.events("config.reload.done")
    assert [e["restarted"] for e in done] == [["purge"], ["purge"], [], ["purge"], ["purge"]]
    lifecycle = [
        (e["event"], e["service"]) for e in mirror.logs.events() if e["event"].startswith("downs")
    ]
    assert lifecycle == [
        ("downstream.service.started", "purge"),
        *[("downstream.service.stopped", "purge"), ("downstream.service.started", "purge")] * 2,
        ("downstream.service.stopped", "purge"),  # turned off
        ("downstream.service.started", "purge"),  # and on
    ]
    assert "second-token" not in mirror.logs.stream.getvalue()
    assert not mirror.logs.events("daemon.task.failed")


async def test_a_purge_cut_short_by_a_reload_is_done_by_the_new_instance(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("p", 3))
    async with cdn_server() as cdn:
        cdn.held.add(f"/hung{INDEX}")
        config = configure(mirror, purge={"urls": [f"{cdn.url}/hung"]})
        async with running_daemon(mirror, config) as daemon:
            await synced(daemon, 1)
            async with asyncio.timeout(LIMIT):
                await cdn.arrived.wait()  # the first purge is in flight, and hangs
            configure(mirror, purge={"urls": [f"{cdn.url}/live"]})
            assert (await ctl(daemon, "reload"))["restarted"] == ["purge"]
            # No publish since: the new instance purges the event the old one gave back.
            await purged(purger_of(daemon), 1)
            assert purger_of(daemon).stats.purged == 2  # the index and its directory
            assert [m for m, _ in cdn.to(f"/live{INDEX}")] == ["PURGE"]
            assert [m for m, _ in cdn.to(f"/live/{KEY}/")] == ["PURGE"]


async def test_a_reload_moves_announcements_to_a_new_topic_and_keeps_what_was_waiting(
    mirror: Mirror, broker: Mosquitto
) -> None:
    mirror.tree.put(KEY, simple_specs("p", 3))

    def config(prefix: str) -> Path:
        announce = {"url": broker.url, "topic_prefix": prefix, "reconnect_max": 1, "qos": 1}
        return configure(mirror, push={"announce": {**announce, "retain": True}})

    async with running_daemon(mirror, config("rsync/old.test")) as daemon:
        await synced(daemon, 1)
        await announced(daemon, 1)
        old = daemon.announcer
        assert old is not None
        broker.stop()
        async with asyncio.timeout(LIMIT):
            await old.wait_until(lambda: not old.connected)
        await publish(mirror, daemon, 4)  # waits for the broker in the old announcer
        assert (await ctl(daemon, "status"))["announce"]["pending"] == 1

        config("rsync/new.test")
        reply = await ctl(daemon, "reload")
        assert reply["restarted"] == ["announce"] and reply["applied"] == ["push.announce"]
        assert daemon.announcer is not old
        broker.start()  # it kept nothing: what it holds now, the new instance sent
        await announced(daemon, 1)
        async with listening(broker, "rsync/#") as t2:
            assert await receive(t2, 1) == [
                ("rsync/new.test/v3.20/x86_64", str(KEY).encode(), True)
            ]
            await publish(mirror, daemon, 5)
            assert await receive(t2, 1) == [
                ("rsync/new.test/v3.20/x86_64", str(KEY).encode(), False)
            ]
        status = (await ctl(daemon, "status"))["announce"]
        assert status["topic_prefix"] == "rsync/new.test" and status["pending"] == 0
    assert [e["restarted"] for e in mirror.logs.events("config.reload.done")] == [["announce"]]
    assert not mirror.logs.events("daemon.task.failed")


async def test_a_reload_turns_the_bucket_on_which_catches_up_and_off_again(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    mirror.tree.put(KEY, simple_specs("p", 3))
    async with running_daemon(mirror, configure(mirror)) as daemon:
        await synced(daemon, 1)
        assert daemon.bucket_mirror is None
        s3 = s3_section(seaweed, bucket, mirror.tmp)
        configure(mirror, s3=s3)
        reply = await ctl(daemon, "reload")
        assert reply["restarted"] == ["bucket"] and reply["applied"] == ["s3"]
        snapshot = (await ctl(daemon, "snapshots", arch=str(KEY)))["snapshots"][0]["id"]
        async with asyncio.timeout(LIMIT):  # published before the bucket existed: caught up
            await daemon.bucket_opened.wait()
            running = daemon.bucket_mirror
            assert running is not None
            await running.wait_synced(KEY, snapshot)
        keys = bucket_keys(seaweed.client(), bucket)
        assert f"alpine/{KEY}/APKINDEX.tar.gz" in keys and len(keys) == 4

        configure(mirror, s3={**s3, "credentials_file": str(mirror.tmp / "nowhere")})
        with pytest.raises(ControlError, match=r"s3\.credentials_file"):
            await ctl(daemon, "reload")
        assert daemon.bucket_mirror is running

        configure(mirror)
        assert (await ctl(daemon, "reload"))["restarted"] == ["bucket"]
        assert daemon.bucket_mirror is None
        status = await ctl(daemon, "status")
        assert status["bucket"] is None
    assert not mirror.logs.events("daemon.task.failed")


async def test_a_reload_subscribes_the_push_trigger_to_new_topics(
    mirror: Mirror, broker: Mosquitto
) -> None:
    mirror.tree.put(KEY, simple_specs("p", 3))

    def config(topic: str) -> Path:
        mqtt = {"url": broker.url, "reconnect_max": 1, "topics": [topic]}
        return configure(mirror, push={"mqtt": mqtt})

    async with running_daemon(mirror, config("rsync/old.test/#")) as daemon:
        await synced(daemon, 1)
        await subscribed(daemon)
        old = daemon.push
        config("rsync/new.test/#")
        assert (await ctl(daemon, "reload"))["restarted"] == ["push"]
        assert daemon.push is not old
        await subscribed(daemon)
        mirror.tree.put(KEY, simple_specs("p", 4))
        await broker.publish("rsync/old.test/v3.20/x86_64", str(KEY))  # nobody listens there
        await push(daemon, broker, "rsync/new.test/v3.20/x86_64", str(KEY))
        async with asyncio.timeout(LIMIT):
            await synced(daemon, 2)
        assert daemon.push is not None and daemon.push.messages == 1
    routed = mirror.logs.events("push.message.routed")
    assert [e["arches"] for e in routed] == [{str(KEY): "started"}]
