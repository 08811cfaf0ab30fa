"""The push trigger against a real mosquitto on loopback, driving the real daemon.

Messages are published with a real MQTT client; every wait is on the
listener's or the scheduler's own conditions, bounded by LIMIT so that a
broken trigger fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.releasegen import write_release, write_top
from mirrord.demo.repogen import simple_specs
from mirrord.shell.daemon import Daemon
from mirrord.shell.mqtt_push import MqttPushListener
from tests.daemon_harness import ctl, daemon_config, running_daemon, synced
from tests.helpers import Mirror
from tests.mosquitto import Mosquitto
from tests.nginx import free_port
from tests.prom import samples, scrape, value

MAIN = ArchKey("v3.20", "main", "x86_64")
COMMUNITY = ArchKey("v3.20", "community", "x86_64")
GUIDE_TOPIC = "rsync/rsync.alpinelinux.org/v3.20/main"
MASTER_TOPIC = "rsync/dl-master.alpinelinux.org/v3.20/x86_64"
LIMIT = 30.0  # seconds any single wait may take before the test fails instead of hanging


def push_config(mirror: Mirror, url: str, **extra: object) -> Path:
    mqtt = {"url": url, "reconnect_max": 2, "client_id": f"mirrord-test-{free_port()}"}
    return daemon_config(mirror, MAIN, COMMUNITY, push={"mqtt": mqtt}, **extra)


def listener_of(daemon: Daemon) -> MqttPushListener:
    assert daemon.push is not None
    return daemon.push


async def subscribed(daemon: Daemon, connections: int = 1) -> None:
    listener = listener_of(daemon)
    async with asyncio.timeout(LIMIT):
        await listener.wait_until(
            lambda: listener.connected and listener.connections >= connections
        )


async def push(daemon: Daemon, broker: Mosquitto, topic: str, payload: bytes | str) -> None:
    """Publish one message and wait until the daemon has routed (or ignored) it."""
    listener = listener_of(daemon)
    seen = listener.messages
    await broker.publish(topic, payload)
    async with asyncio.timeout(LIMIT):
        await listener.wait_until(lambda: listener.messages > seen)


async def runs(daemon: Daemon, key: ArchKey, count: int) -> None:
    async with asyncio.timeout(LIMIT):
        await synced(daemon, count, key)


async def metrics(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(await scrape(f"http://{daemon.config.metrics.listen}"))


def origin_index_sha(mirror: Mirror, key: ArchKey) -> str:
    return hashlib.sha256((mirror.tree.arch_dir(key) / "APKINDEX.tar.gz").read_bytes()).hexdigest()


def done_outcomes(mirror: Mirror, key: ArchKey) -> list[str]:
    return [e["outcome"] for e in mirror.logs.events("sync.arch.done") if e["arch"] == str(key)]


async def test_a_push_syncs_that_arch_alone_at_once(mirror: Mirror, broker: Mosquitto) -> None:
    mirror.tree.put(MAIN, simple_specs("m", 3))
    mirror.tree.put(COMMUNITY, simple_specs("c", 3))
    async with running_daemon(mirror, push_config(mirror, broker.url)) as daemon:  # interval 1 h
        assert daemon.runtime is not None and daemon.scheduler is not None
        book = daemon.runtime.book
        await runs(daemon, MAIN, 1)
        await runs(daemon, COMMUNITY, 1)
        await subscribed(daemon)
        found = await metrics(daemon)
        assert value(found, "mirrord_push_connected") == 1

        mirror.tree.put(MAIN, simple_specs("m", 5))
        mirror.tree.put(COMMUNITY, simple_specs("c", 5))  # changed too, but not announced
        await push(daemon, broker, GUIDE_TOPIC, f"{MAIN}\n")
        await runs(daemon, MAIN, 2)
        assert book[MAIN].published_sha256 == origin_index_sha(mirror, MAIN)
        assert book[COMMUNITY].runs == 1 and daemon.scheduler.syncing == []
        assert book[COMMUNITY].rerun_queued is False

        found = await metrics(daemon)
        assert value(found, "mirrord_push_messages_total", outcome="started") == 1
        assert value(found, "mirrord_push_messages_total", outcome="ignored") == 0
        status = await ctl(daemon, "status")
        assert status["push"]["connected"] is True and status["push"]["messages"] == 1
        assert status["push"]["broker"] == broker.url
        rows = {row["arch"]: row for row in status["arches"]}
        assert rows[str(MAIN)]["packages"] == 5 and rows[str(COMMUNITY)]["packages"] == 3
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5  # the subscription does not hold up the shutdown
    assert done_outcomes(mirror, COMMUNITY) == ["published"]
    assert done_outcomes(mirror, MAIN) == ["published", "published"]
    routed = mirror.logs.events("push.message.routed")
    assert [e["arches"] for e in routed] == [{str(MAIN): "started"}]
    assert [e["event"] for e in mirror.logs.events() if e["event"].startswith("push.")][-1] == (
        "push.disconnected"
    )


async def test_the_daemon_reconnects_after_the_broker_restarts(
    mirror: Mirror, broker: Mosquitto
) -> None:
    mirror.tree.put(MAIN, simple_specs("m", 3))
    mirror.tree.put(COMMUNITY, simple_specs("c", 3))
    async with running_daemon(mirror, push_config(mirror, broker.url)) as daemon:
        listener = listener_of(daemon)
        await synced(daemon, 1)
        await subscribed(daemon)

        broker.stop()
        async with asyncio.timeout(LIMIT):
            await listener.wait_until(lambda: not listener.connected)
        assert value(await metrics(daemon), "mirrord_push_connected") == 0
        assert (await ctl(daemon, "status"))["push"]["connected"] is False

        broker.start()
        await subscribed(daemon, connections=2)
        assert value(await metrics(daemon), "mirrord_push_connected") == 1
        mirror.tree.put(COMMUNITY, simple_specs("c", 4))
        await push(daemon, broker, MASTER_TOPIC, str(COMMUNITY))
        await runs(daemon, COMMUNITY, 2)
        assert daemon.runtime is not None
        assert daemon.runtime.book[COMMUNITY].published_sha256 == origin_index_sha(
            mirror, COMMUNITY
        )
        assert daemon.runtime.book[MAIN].runs == 1
    assert len(mirror.logs.events("push.connected")) == 2
    assert len(mirror.logs.events("push.disconnected")) == 2  # the restart, and the shutdown


async def test_a_push_during_that_arch_sync_brings_exactly_one_more(
    mirror: Mirror, broker: Mosquitto
) -> None:
    specs = simple_specs("m", 6, payload=2000)
    mirror.tree.put(MAIN, specs)
    mirror.tree.put(COMMUNITY, simple_specs("c", 3))
    mirror.origin.add_fault(f"{MAIN}/{specs[-1].filename}", Fault.stall())
    config = push_config(mirror, broker.url, fetch={"read_timeout": 600})
    async with running_daemon(mirror, config) as daemon:
        assert daemon.runtime is not None and daemon.scheduler is not None
        book = daemon.runtime.book
        await subscribed(daemon)
        async with asyncio.timeout(LIMIT):
            await mirror.origin.stalled.wait()
        await runs(daemon, COMMUNITY, 1)
        assert daemon.scheduler.syncing == [MAIN]

        for _ in range(3):  # however often it is announced, one more sync
            await push(daemon, broker, GUIDE_TOPIC, f"{MAIN}\n")
        assert book[MAIN].rerun_queued is True
        found = await metrics(daemon)
        assert value(found, "mirrord_push_messages_total", outcome="queued") == 3
        assert value(found, "mirrord_push_messages_total", outcome="started") == 0

        mirror.origin.release_stalls.set()
        await runs(daemon, MAIN, 2)
        assert book[MAIN].runs == 2 and book[MAIN].rerun_queued is False
        assert daemon.scheduler.syncing == [] and book[COMMUNITY].runs == 1
    assert done_outcomes(mirror, MAIN) == ["published", "unchanged"]
    routed = mirror.logs.events("push.message.routed")
    assert [e["arches"][str(MAIN)] for e in routed] == [
        "queued",
        "already_queued",
        "already_queued",
    ]


async def test_junk_is_ignored_and_counted_and_the_daemon_serves_on(
    mirror: Mirror, broker: Mosquitto
) -> None:
    mirror.tree.put(MAIN, simple_specs("m", 3))
    mirror.tree.put(COMMUNITY, simple_specs("c", 3))
    junk: list[tuple[str, bytes]] = [
        (GUIDE_TOPIC, b"\xff\xfe\x00\x01garbage"),
        (GUIDE_TOPIC, b"v3.20/main/x86_64" * 10_000),
        (GUIDE_TOPIC, b"../../../etc/passwd"),
        (GUIDE_TOPIC, b"v3.20/main/../../x86_64"),
        ("rsync/rsync.alpinelinux.org", b""),
        (GUIDE_TOPIC, b"v3.20/main/riscv64\n"),
        (MASTER_TOPIC, b"edge/main/x86_64"),
    ]
    async with running_daemon(mirror, push_config(mirror, broker.url)) as daemon:
        assert daemon.runtime is not None and daemon.scheduler is not None
        book = daemon.runtime.book
        await synced(daemon, 1)
        await subscribed(daemon)
        for topic, payload in junk:
            await push(daemon, broker, topic, payload)

        found = await metrics(daemon)
        assert value(found, "mirrord_push_messages_total", outcome="ignored") == len(junk)
        ignored = {
            reason: value(found, "mirrord_push_ignored_messages_total", reason=reason)
            for reason in ("too_large", "not_utf8", "malformed", "not_configured")
        }
        assert ignored == {"too_large": 1, "not_utf8": 1, "malformed": 3, "not_configured": 2}
        assert book[MAIN].runs == 1 and book[COMMUNITY].runs == 1
        assert daemon.scheduler.syncing == [] and listener_of(daemon).connected

        # Still subscribed, still serving: a real announcement works after the junk.
        mirror.tree.put(MAIN, simple_specs("m", 4))
        await push(daemon, broker, GUIDE_TOPIC, str(MAIN))
        await runs(daemon, MAIN, 2)
        assert (await ctl(daemon, "status"))["push"]["messages"] == len(junk) + 1
    events = mirror.logs.events("push.message.ignored")
    assert [e["reason"] for e in events] == [
        "not_utf8",
        "too_large",
        "malformed",
        "malformed",
        "malformed",
        "not_configured",
        "not_configured",
    ]
    assert all(len(e["payload"]) < 120 for e in events)  # a preview, not the whole payload
    assert mirror.logs.events("push.connected") and not mirror.logs.events("daemon.task.failed")


async def test_with_the_broker_unreachable_the_interval_keeps_polling(mirror: Mirror) -> None:
    mirror.tree.put(MAIN, simple_specs("m", 3))
    mirror.tree.put(COMMUNITY, simple_specs("c", 3))
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    async with running_daemon(mirror, push_config(mirror, nobody, interval=1)) as daemon:
        assert daemon.runtime is not None
        mirror.tree.put(MAIN, simple_specs("m", 4))
        await runs(daemon, MAIN, 3)
        assert daemon.runtime.book[MAIN].published_sha256 == origin_index_sha(mirror, MAIN)
        assert listener_of(daemon).connections == 0
        assert value(await metrics(daemon), "mirrord_push_connected") == 0
        assert (await ctl(daemon, "status"))["push"]["connected"] is False
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5  # a reconnect backoff does not delay the stop
    assert mirror.logs.events("push.connect.failed")
    assert not mirror.logs.events("push.connected")


async def test_a_push_naming_a_releases_directory_starts_a_releases_pass(
    mirror: Mirror, broker: Mosquitto
) -> None:
    x86 = "v3.20/releases/x86_64"
    root = mirror.tree.root
    mirror.tree.put(MAIN, simple_specs("m", 2))
    mirror.tree.put(COMMUNITY, simple_specs("c", 2))
    write_release(root, "v3.20", "x86_64", "3.20.2")
    write_top(root, "v3.20")
    releases = {"branches": ["v3.20"], "arches": ["x86_64"], "interval": 3600}
    async with running_daemon(mirror, push_config(mirror, broker.url, releases=releases)) as daemon:
        assert daemon.runtime is not None
        mirror_trees = daemon.runtime.releases
        async with asyncio.timeout(LIMIT):
            await mirror_trees.wait_for_passes(1)
        await subscribed(daemon)
        write_release(root, "v3.20", "x86_64", "3.20.3")
        await push(daemon, broker, MASTER_TOPIC, f"{x86}\n")
        async with asyncio.timeout(LIMIT):
            await mirror_trees.wait_for_passes(2)
        published = (daemon.config.publish.path / x86 / "latest-releases.yaml").read_bytes()
        found = await metrics(daemon)
    assert published == (root / x86 / "latest-releases.yaml").read_bytes()
    assert b"3.20.3" in published
    assert value(found, "mirrord_push_messages_total", outcome="started") == 1
    routed = mirror.logs.events("push.message.routed")
    assert [e["arches"] for e in routed] == [{x86: "started"}]
