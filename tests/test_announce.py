"""Downstream announcements: Alpine's topic and payload after each publish, to a real mosquitto.

A real MQTT client subscribes where a T2's mqtt-exec would; every wait is on
the announcer's or the scheduler's own conditions, bounded by LIMIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.shell.daemon import Daemon
from mirrord.shell.mqtt_announce import MqttAnnouncer
from mirrord.sync.announce import Announcement, Pending, announcement, default_prefix
from mirrord.sync.feed import Published
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import Mirror
from tests.mosquitto import Mosquitto
from tests.nginx import free_port
from tests.prom import samples, scrape, value

MAIN = ArchKey("v3.20", "main", "x86_64")
COMMUNITY = ArchKey("v3.20", "community", "aarch64")
PREFIX = "rsync/t1.test"
LIMIT = 30.0


def announce_config(mirror: Mirror, url: str, **announce: object) -> Path:
    settings = {"url": url, "topic_prefix": PREFIX, "reconnect_max": 1, **announce}
    return daemon_config(mirror, MAIN, COMMUNITY, push={"announce": settings})


def announcer_of(daemon: Daemon) -> MqttAnnouncer:
    assert daemon.announcer is not None
    return daemon.announcer


async def announced(daemon: Daemon, sent: int) -> None:
    announcer = announcer_of(daemon)
    async with asyncio.timeout(LIMIT):
        await announcer.wait_until(lambda: announcer.connected and announcer.sent >= sent)


@asynccontextmanager
async def listening(broker: Mosquitto, topic: str) -> AsyncIterator[aiomqtt.Client]:
    """A subscriber such as a T2's mqtt-exec (QoS 1: the broker keeps nothing from us)."""
    async with aiomqtt.Client("127.0.0.1", broker.port, timeout=10) as client:
        await client.subscribe(topic, qos=1)
        yield client


async def receive(client: aiomqtt.Client, count: int) -> list[tuple[str, bytes, bool]]:
    found: list[tuple[str, bytes, bool]] = []
    async with asyncio.timeout(LIMIT):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            found.append((message.topic.value, message.payload, message.retain))
            if len(found) == count:
                return found
    raise AssertionError("the subscription ended")


def test_the_message_has_alpines_topic_and_payload() -> None:
    event = Published("v3.20/community/aarch64", ("v3.20/community/aarch64/APKINDEX.tar.gz",), 1.0)
    assert announcement(event, "rsync/t1.example.org") == Announcement(
        "v3.20/community/aarch64",
        "rsync/t1.example.org/v3.20/aarch64",
        b"v3.20/community/aarch64",
    )
    assert announcement(Published("v3.20/main", (), 1.0), "rsync/x") is None
    assert announcement(Published("v3.20/../x86_64", (), 1.0), "rsync/x") is None
    assert default_prefix("mirror1.example.org.\n") == "rsync/mirror1.example.org"


def test_waiting_announcements_are_kept_once_per_arch_oldest_first() -> None:
    pending = Pending()
    first = announcement(Published(str(MAIN), (), 1.0), PREFIX)
    second = announcement(Published(str(COMMUNITY), (), 2.0), PREFIX)
    again = announcement(Published(str(MAIN), (), 3.0), PREFIX)
    assert first is not None and second is not None and again is not None
    assert pending.add(first) and pending.add(second)
    assert not pending.add(again)
    assert len(pending) == 2 and pending.first() is again
    pending.sent(first)  # an older message for the arch: the newer one still waits
    assert len(pending) == 2
    pending.sent(again)
    assert len(pending) == 1 and pending.first() is second


async def test_each_publish_and_rollback_is_announced_on_its_arch_topic(
    mirror: Mirror, broker: Mosquitto
) -> None:
    mirror.tree.put(MAIN, simple_specs("m", 3))
    mirror.tree.put(COMMUNITY, simple_specs("c", 3, arch="aarch64"))
    async with (
        listening(broker, f"{PREFIX}/#") as t2,
        running_daemon(mirror, announce_config(mirror, broker.url)) as daemon,
    ):
        await synced(daemon, 1)
        first = sorted(await receive(t2, 2))
        assert first == [
            (f"{PREFIX}/v3.20/aarch64", b"v3.20/community/aarch64", False),
            (f"{PREFIX}/v3.20/x86_64", b"v3.20/main/x86_64", False),
        ]

        # An unchanged pass announces nothing; the next publish of MAIN does.
        assert (await ctl(daemon, "sync", arches=[str(COMMUNITY)]))["queued"]
        await synced(daemon, 2, COMMUNITY)
        mirror.tree.put(MAIN, simple_specs("m", 4))
        await ctl(daemon, "sync", arches=[str(MAIN)])
        await synced(daemon, 2, MAIN)
        assert await receive(t2, 1) == [(f"{PREFIX}/v3.20/x86_64", b"v3.20/main/x86_64", False)]
        await announced(daemon, 3)
        # A rollback puts another index live: the T2s hear of it too.
        oldest = (await ctl(daemon, "snapshots", arch=str(MAIN)))["snapshots"][-1]
        await ctl(daemon, "rollback", arch=str(MAIN), snapshot=oldest["id"])
        assert await receive(t2, 1) == [(f"{PREFIX}/v3.20/x86_64", b"v3.20/main/x86_64", False)]
        await announced(daemon, 4)

        found = samples(await scrape(f"http://{daemon.config.metrics.listen}"))
        assert value(found, "mirrord_announce_connected") == 1
        assert value(found, "mirrord_announce_messages_total", outcome="sent") == 4
        assert value(found, "mirrord_announce_messages_total", outcome="failed") == 0
        assert value(found, "mirrord_announce_messages_total", outcome="dropped") == 0
        status = (await ctl(daemon, "status"))["announce"]
        assert status["connected"] is True and status["sent"] == 4 and status["pending"] == 0
        assert status["topic_prefix"] == PREFIX and status["broker"] == broker.url
        text = await human_ctl(daemon, "status")
        assert f"announce: to {broker.url} on {PREFIX}/<branch>/<arch>, connected since" in text
        assert "4 sent, 0 failed, 0 waiting" in text
    outcomes = [e["outcome"] for e in mirror.logs.events("sync.arch.done")]
    assert sorted(outcomes) == ["published", "published", "published", "unchanged"]
    assert len(mirror.logs.events("announce.sent")) == 4


async def test_publishes_while_the_broker_is_down_are_announced_when_it_is_back(
    mirror: Mirror, broker: Mosquitto
) -> None:
    mirror.tree.put(MAIN, simple_specs("m", 3))
    mirror.tree.put(COMMUNITY, simple_specs("c", 3, arch="aarch64"))
    config = announce_config(mirror, broker.url, retain=True, qos=1)
    async with running_daemon(mirror, config) as daemon:
        assert daemon.runtime is not None
        announcer = announcer_of(daemon)
        await synced(daemon, 1)
        await announced(daemon, 2)

        broker.stop()
        async with asyncio.timeout(LIMIT):
            await announcer.wait_until(lambda: not announcer.connected)
        # Publishing goes on without the broker: two publishes of MAIN, one message waits.
        for count in (4, 5):
            mirror.tree.put(MAIN, simple_specs("m", count))
            await ctl(daemon, "sync", arches=[str(MAIN)])
            await synced(daemon, count - 2, MAIN)
        assert daemon.runtime.book[MAIN].runs == 3
        status = (await ctl(daemon, "status"))["announce"]
        assert status["connected"] is False and status["sent"] == 2
        assert "not connected (retrying)" in await human_ctl(daemon, "status")

        broker.start()
        await announced(daemon, 3)
        # Retained: a T2 that subscribes now still hears of the latest publish of each arch.
        async with listening(broker, f"{PREFIX}/#") as t2:
            assert await receive(t2, 1) == [(f"{PREFIX}/v3.20/x86_64", b"v3.20/main/x86_64", True)]
        assert announcer.sent == 3 and announcer.connections == 2
        found = samples(await scrape(f"http://{daemon.config.metrics.listen}"))
        assert value(found, "mirrord_announce_connected") == 1
        assert value(found, "mirrord_announce_messages_total", outcome="sent") == 3
    assert len(mirror.logs.events("announce.connected")) == 2
    assert mirror.logs.events("announce.disconnected")[0]["pending"] == 0
    assert not mirror.logs.events("daemon.task.failed")


async def test_an_unreachable_broker_never_holds_up_a_publish(mirror: Mirror) -> None:
    mirror.tree.put(MAIN, simple_specs("m", 3))
    mirror.tree.put(COMMUNITY, simple_specs("c", 3, arch="aarch64"))
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    async with running_daemon(mirror, announce_config(mirror, nobody)) as daemon:
        await synced(daemon, 1)
        status = (await ctl(daemon, "status"))["announce"]
        assert status["connected"] is False and status["sent"] == 0
        assert daemon.runtime is not None
        assert all(daemon.runtime.book[k].published_sha256 for k in (MAIN, COMMUNITY))
    assert [e["outcome"] for e in mirror.logs.events("sync.arch.done")] == ["published"] * 2
