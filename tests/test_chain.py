"""A T1 -> T2 chain: mirrord B mirrors the nginx serving mirrord A's tree, pushed by A alone.

A syncs from the test origin when the origin's announcement (a real MQTT
message) names an arch, publishes, and announces in Alpine's shape through a
real mosquitto; B, polling once an hour, subscribes to A's topics. Only those
announcements can explain B's freshness. Over a few generations B's tree is
byte-identical to A's (index mtime too), B fetches only what A announced, and
a pass of B over what did not change costs conditional GETs answered 304,
counted in nginx's access log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from pathlib import Path

import aiomqtt

from benchmarks.servers import LoggedNginx
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.shell.daemon import Daemon
from tests.daemon_harness import ctl, running_daemon, synced
from tests.helpers import LogCapture, Mirror, config_dict, repositories, write_yaml
from tests.mosquitto import Mosquitto
from tests.nginx import free_port
from tests.prom import samples, scrape, value

MAIN = ArchKey("v3.20", "main", "x86_64")
COMMUNITY = ArchKey("v3.20", "community", "x86_64")
KEYS = (MAIN, COMMUNITY)
ORIGIN_PREFIX = "rsync/origin.test"
T1_PREFIX = "rsync/t1.test"
INDEX = "APKINDEX.tar.gz"
LIMIT = 30.0
# which arches each generation changes at the origin
GENERATIONS = ((MAIN,), (COMMUNITY,), (MAIN, COMMUNITY), (MAIN,))


def settings(tmp: Path, broker: Mosquitto, topics: str, announce: str | None) -> dict[str, object]:
    push: dict[str, object] = {"mqtt": {"url": broker.url, "topics": [topics], "reconnect_max": 1}}
    if announce is not None:
        # QoS 1: an announcement counts as sent once the broker has it, so a T2 that
        # subscribes after A's first two were sent cannot hear them (with QoS 0 the
        # bytes may still be in A's client under load, and B heard one: a 304 more).
        push["announce"] = {
            "url": broker.url,
            "topic_prefix": announce,
            "reconnect_max": 1,
            "qos": 1,
        }
    return {
        "control": {"socket": str(tmp / "control.sock")},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "interval": 3600,  # only a push can explain a sync
        "push": push,
    }


def tree(root: Path) -> dict[str, tuple[str, int | None]]:
    """Every file under the arch directories: its digest, and the index's mtime."""
    found: dict[str, tuple[str, int | None]] = {}
    for key in KEYS:
        directory = root.joinpath(*key.parts)
        for path in sorted(directory.iterdir()):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            mtime = path.stat().st_mtime_ns if path.name == INDEX else None
            found[f"{key}/{path.name}"] = (digest, mtime)
    return found


async def announce_origin(broker: Mosquitto, key: ArchKey) -> None:
    """What Alpine's master does after an upload: the arch's topic, the payload naming it."""
    async with aiomqtt.Client("127.0.0.1", broker.port, timeout=10) as client:
        await client.publish(f"{ORIGIN_PREFIX}/{key.branch}/{key.arch}", f"{key}\n", qos=1)


async def lag(daemon: Daemon) -> dict[ArchKey, float]:
    found = samples(await scrape(f"http://{daemon.config.metrics.listen}"))
    return {
        key: value(
            found,
            "mirrord_mirror_lag_seconds",
            **{"branch": key.branch, "repo": key.repo, "arch": key.arch},
        )
        for key in KEYS
    }


def index_requests(nginx: LoggedNginx) -> dict[int, int]:
    """Status -> count of B's requests for the indexes, from nginx's access log."""
    statuses: dict[int, int] = {}
    for line in nginx.access_log.read_text().splitlines():
        status, _method, _sent, uri = line.split(" ", 3)
        if uri.endswith(f"/{INDEX}"):
            statuses[int(status)] = statuses.get(int(status), 0) + 1
    return statuses


async def test_t2_follows_t1_by_its_announcements_alone(
    mirror: Mirror, broker: Mosquitto, tmp_path: Path
) -> None:
    for n, key in enumerate(KEYS):
        mirror.tree.put(key, simple_specs(key.repo, 3, seed=n))
    a_config = mirror.config_file(
        *KEYS, **settings(mirror.tmp, broker, f"{ORIGIN_PREFIX}/#", T1_PREFIX)
    )
    a_published = mirror.tmp / "published"
    b_tmp = tmp_path / "t2"
    b_tmp.mkdir()
    b_mirror = dataclasses.replace(mirror, tmp=b_tmp, logs=LogCapture())
    with LoggedNginx(a_published, tmp_path / "nginx") as nginx:
        b_data = config_dict(
            b_tmp,
            nginx.url,
            mirror.keys,
            repositories(*KEYS),
            **settings(b_tmp, broker, f"{T1_PREFIX}/#", None),
        )
        b_config = write_yaml(b_tmp / "mirrord.yaml", b_data)
        async with running_daemon(mirror, a_config) as a:
            await synced(a, 1)
            assert a.announcer is not None and a.push is not None
            async with asyncio.timeout(LIMIT):
                await a.announcer.wait_until(
                    lambda: a.announcer is not None and a.announcer.sent == 2
                )
                await a.push.wait_until(lambda: a.push is not None and a.push.connected)
            async with running_daemon(b_mirror, b_config) as b:
                assert b.push is not None and b.runtime is not None and a.runtime is not None
                await synced(b, 1)
                async with asyncio.timeout(LIMIT):
                    await b.push.wait_until(lambda: b.push is not None and b.push.connected)
                assert tree(b.config.publish.path) == tree(a_published)
                runs = {key: 1 for key in KEYS}

                for generation, changed in enumerate(GENERATIONS, start=1):
                    for key in changed:
                        count = 3 + generation  # new packages; the others keep their bytes
                        mirror.tree.put(key, simple_specs(key.repo, count, seed=KEYS.index(key)))
                        await announce_origin(broker, key)
                        runs[key] += 1
                    async with asyncio.timeout(LIMIT):
                        for key in changed:
                            await synced(a, runs[key], key)
                            await synced(b, runs[key], key)
                    assert {k: b.runtime.book[k].runs for k in KEYS} == runs, "\n".join(
                        str({k: e.get(k) for k in ("event", "arch", "outcome", "payload", "topic")})
                        for e in b_mirror.logs.events()
                        if str(e.get("event", "")).startswith(("sync.", "push."))
                    )
                    assert tree(b.config.publish.path) == tree(a_published), generation
                    origin_index = mirror.tree.arch_dir(changed[0]) / INDEX
                    b_index = b.config.publish.path.joinpath(*changed[0].parts, INDEX)
                    assert b_index.read_bytes() == origin_index.read_bytes()
                    assert os.stat(b_index).st_mtime_ns == os.stat(origin_index).st_mtime_ns
                    assert await lag(a) == await lag(b) == {k: 0.0 for k in KEYS}

                # Every index B fetched with a body was one A announced; none other.
                announced = len(KEYS) + sum(len(c) for c in GENERATIONS)
                assert index_requests(nginx) == {200: announced}
                assert b.push.messages == a.announcer.sent - len(KEYS)

                # A pass of B over what did not change: one conditional GET each, 304.
                await ctl(b, "sync", arches=[str(k) for k in KEYS])
                async with asyncio.timeout(LIMIT):
                    for key in KEYS:
                        await synced(b, runs[key] + 1, key)
                assert index_requests(nginx) == {200: announced, 304: len(KEYS)}
                assert tree(b.config.publish.path) == tree(a_published)

                # Lag through the chain: B held back on one arch is behind from the time
                # the origin's index is dated (A keeps that mtime), and A is not behind.
                assert b.scheduler is not None
                b.scheduler.hold(COMMUNITY)
                mirror.tree.put(COMMUNITY, simple_specs(COMMUNITY.repo, 9, seed=1))
                origin_mtime = (mirror.tree.arch_dir(COMMUNITY) / INDEX).stat().st_mtime
                await announce_origin(broker, COMMUNITY)
                book = b.runtime.book
                async with asyncio.timeout(LIMIT):
                    await synced(a, runs[COMMUNITY] + 1, COMMUNITY)
                    await b.scheduler.wait_until(lambda: book[COMMUNITY].behind_since is not None)
                assert book[COMMUNITY].origin_last_modified == origin_mtime
                behind_since = book[COMMUNITY].behind_since
                assert behind_since is not None and behind_since <= origin_mtime
                b_lag, a_lag = await lag(b), await lag(a)
                assert b_lag[COMMUNITY] > 0 and b_lag[MAIN] == 0
                assert a_lag == {k: 0.0 for k in KEYS}
                b.scheduler.request(COMMUNITY)
                async with asyncio.timeout(LIMIT):
                    await synced(b, runs[COMMUNITY] + 2, COMMUNITY)
                assert await lag(b) == {k: 0.0 for k in KEYS}
                assert tree(b.config.publish.path) == tree(a_published)
    b_outcomes = [e["outcome"] for e in b_mirror.logs.events("sync.arch.done")]
    assert b_outcomes.count("unchanged") == len(KEYS)
    assert b_outcomes.count("published") == announced + 1
    assert not b_mirror.logs.events("sync.arch.failed")
