"""Fleet mode: no node makes an index live before every live node has staged it.

The decision is tested alone; the barrier against a real etcd (Debian's
etcd-server) on loopback; and a fleet of three real ``mirrord run`` processes
behind a reader that asks a random node for every file, across 20+
generations of a live origin, with one node killed -9 mid-generation and
started again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import os
import random
import signal
import threading
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirrord.alpine.signing import Keyring
from mirrord.core.clock import FakeClock, SystemClock
from mirrord.core.config import FleetConfig
from mirrord.core.config.parse import load_config, parse_config
from mirrord.core.errors import ConfigError
from mirrord.core.logs import make_logger
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.publish.fleetplan import Decision, StagedIndex, Verdict, decide
from mirrord.shell.control.render import status as render_status
from mirrord.shell.daemon import Daemon
from mirrord.sync.etcd import EtcdClient
from mirrord.sync.fleet import FleetMember, open_fleet
from mirrord.sync.runtime import open_runtime
from tests.browser import table_rows
from tests.daemon_harness import ctl, daemon_config, running_daemon, synced
from tests.etcd import Etcd
from tests.helpers import (
    Mirror,
    check_published,
    config_dict,
    run_mirrord,
    spawn_mirrord,
    until,
    write_yaml,
)
from tests.nginx import free_port
from tests.prom import samples, scrape, value
from tests.reader import ReaderStats, evolve, read_until

KEY = ArchKey("v3.20", "main", "x86_64")
D1, D2 = "1" * 64, "2" * 64


# --- the decision, alone ---------------------------------------------------------------


def _decide(
    members: set[str], staged: list[StagedIndex], waited: float = 0.0, mtime: float = 100.0
) -> Decision:
    return decide(
        me="a",
        digest=D1,
        origin_mtime=mtime,
        members=members,
        staged=staged,
        waited=waited,
        timeout=30.0,
    )


def test_go_when_every_live_member_staged_the_index() -> None:
    staged = [StagedIndex("b", D1, 100.0), StagedIndex("c", D1, 100.0)]
    assert _decide({"a", "b", "c"}, staged) == Decision(Verdict.GO)
    # A node that staged but is no longer a member (dead: its lease expired) does not count,
    # and neither does one that is not a member at all.
    assert _decide({"a"}, []) == Decision(Verdict.GO)


def test_wait_for_a_member_that_has_not_staged_then_leave_it_out_after_the_timeout() -> None:
    staged = [StagedIndex("b", D1, 100.0), StagedIndex("c", D2, 90.0)]  # c: an older index
    assert _decide({"a", "b", "c"}, staged, waited=29.9) == Decision(Verdict.WAIT, ("c",))
    assert _decide({"a", "b", "c"}, staged, waited=30.0) == Decision(Verdict.GO_WITHOUT, ("c",))


def test_a_member_that_staged_a_newer_index_supersedes_ours() -> None:
    staged = [StagedIndex("b", D2, 101.0)]
    assert _decide({"a", "b"}, staged) == Decision(Verdict.SUPERSEDED, ("b",))
    # Its newer index does not matter once it also staged ours.
    both = [*staged, StagedIndex("b", D1, 100.0)]
    assert _decide({"a", "b"}, both) == Decision(Verdict.GO)


# --- configuration -----------------------------------------------------------------------


def _config(mirror: Mirror, fleet: object) -> dict[str, Any]:
    return mirror.config_data(KEY, fleet=fleet)


def test_fleet_config_defaults_and_refusals(mirror: Mirror) -> None:
    assert mirror.config(KEY).fleet is None
    fleet = parse_config(_config(mirror, {"etcd": ["http://10.0.0.1:2379/"]})).fleet
    assert fleet is not None
    assert fleet.etcd == ("http://10.0.0.1:2379",)
    assert fleet.node == os.uname().nodename
    assert (fleet.prefix, fleet.stage_timeout, fleet.lease_ttl) == ("/mirrord", 120.0, 10)
    assert (fleet.health_grace, fleet.behind_grace) == (None, 120.0)  # /health: stage_timeout
    graced = {"etcd": ["http://e:2379"], "health_grace": "5m"}
    assert parse_config(_config(mirror, graced)).fleet == replace(
        fleet, etcd=("http://e:2379",), health_grace=300.0
    )
    for bad, where in (
        ({"etcd": []}, "fleet.etcd"),
        ({"etcd": ["etcd:2379"]}, "fleet.etcd[0]"),
        ({"etcd": ["http://e:2379"], "node": "a/b"}, "fleet.node"),
        ({"etcd": ["http://e:2379"], "lease_ttl": 1}, "fleet.lease_ttl"),
        ({"etcd": ["http://e:2379"], "stage_timout": 5}, "fleet.stage_timout"),
        ({"etcd": ["http://e:2379"], "health_grace": 0}, "fleet.health_grace"),
        ({"etcd": ["http://e:2379"], "health_grace": "soon"}, "fleet.health_grace"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(_config(mirror, bad))
        assert caught.value.key_path == where


def test_check_config_names_the_fleet(mirror: Mirror) -> None:
    fleet = {"etcd": ["http://e1:2379", "http://e2:2379"], "node": "t1-a", "stage_timeout": "2m"}
    path = write_yaml(mirror.tmp / "fleet.yaml", _config(mirror, fleet))
    checked = run_mirrord("check-config", "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert (
        "fleet       node t1-a under /mirrord in etcd http://e1:2379, http://e2:2379, "
        "stage_timeout 120 s, /health behind the fleet after 120 s" in checked.stdout
    )
    fleet["health_grace"] = "5m"
    path = write_yaml(mirror.tmp / "fleet.yaml", _config(mirror, fleet))
    checked = run_mirrord("check-config", "--config", str(path))
    assert "/health behind the fleet after 300 s (not checked online)" in checked.stdout


# --- the barrier against a real etcd ------------------------------------------------------


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    with Etcd(tmp_path / "etcd") as server:
        yield server


def _fleet(etcd_url: str, node: str, timeout: float = 30.0) -> FleetConfig:
    return FleetConfig(etcd=(etcd_url,), node=node, stage_timeout=timeout, lease_ttl=2)


async def _staged(client: EtcdClient, digest: str) -> set[str]:
    keys = await client.range_prefix(f"/mirrord/staged/{KEY}/{digest}/")
    return {key.rsplit("/", 1)[1] for key in keys}


@asynccontextmanager
async def _member(
    url: str, node: str, *, stage_timeout: float = 30.0, clock: FakeClock | None = None
) -> AsyncIterator[FleetMember]:
    log = make_logger("debug", "json", stream=io.StringIO())
    async with open_fleet(
        _fleet(url, node, stage_timeout), clock=clock or SystemClock(), log=log, metrics=Metrics()
    ) as member:
        yield member


async def test_no_member_goes_live_before_every_member_staged(etcd: Etcd) -> None:
    async with (
        _member(etcd.url, "a") as a,
        _member(etcd.url, "b") as b,
        EtcdClient.open([etcd.url]) as client,
        asyncio.TaskGroup() as group,
    ):
        await a.join()
        await b.join()
        waiting = group.create_task(a.wait_staged(KEY, D1, 100.0))
        await until(lambda: _staged(client, D1), 10, "a staged D1")
        assert await _staged(client, D1) == {"a"}
        assert not waiting.done()  # b is a member and has not staged D1
        assert await b.wait_staged(KEY, D1, 100.0) == Decision(Verdict.GO)
        assert await waiting == Decision(Verdict.GO)
        # A member that leaves stops counting at once (its lease is revoked, and its keys).
        await b.leave()
        assert "/mirrord/nodes/b" not in await client.range_prefix("/mirrord/nodes/")
        assert await a.wait_staged(KEY, D2, 101.0) == Decision(Verdict.GO)
        # Live with D2, a forgets its key for D1 and keeps D2's (for whoever stages it late).
        await a.went_live(KEY, D2, 101.0)
        assert await _staged(client, D1) == set()
        assert await _staged(client, D2) == {"a"}


async def test_a_lease_lost_while_cut_off_is_taken_again(etcd: Etcd) -> None:
    async with _member(etcd.url, "a") as a, EtcdClient.open([etcd.url]) as client:
        first = await a.join()
        await client.revoke(first)  # what etcd does to a node cut off longer than lease_ttl
        assert "/mirrord/nodes/a" not in await client.range_prefix("/mirrord/nodes/")
        assert await a.wait_staged(KEY, D1, 100.0) == Decision(Verdict.GO)
        assert await a.join() != first
        assert "/mirrord/nodes/a" in await client.range_prefix("/mirrord/nodes/")
        assert await _staged(client, D1) == {"a"}


async def test_a_member_that_never_stages_is_left_out_after_the_timeout(etcd: Etcd) -> None:
    clock = FakeClock(autojump=True)  # the poll pauses pass at once; the timeout is 30 s of them
    async with _member(etcd.url, "a", clock=clock) as a, _member(etcd.url, "b") as b:
        await a.join()
        await b.join()
        started = clock.monotonic()
        assert await a.wait_staged(KEY, D1, 100.0) == Decision(Verdict.GO_WITHOUT, ("b",))
        assert clock.monotonic() - started >= 30.0
        status = a.status()
        assert status["members"] == ["a", "b"]
        assert status["barriers"] == {"left_out": 1}
        assert status["last_left_out"]["nodes"] == ["b"]
        (line,) = [x for x in render_status({"fleet": status}).splitlines() if "fleet" in x]
        assert "2 members (a, b)" in line
        assert "last left out: b on v3.20/main/x86_64" in line
        left_out = a.metrics.barriers.labels(**Metrics.labels(KEY), outcome="left_out")
        assert left_out._value.get() == 1


async def test_etcd_unreachable_goes_live_alone_after_the_timeout() -> None:
    clock = FakeClock(autojump=True)
    nobody = f"http://127.0.0.1:{free_port()}"
    async with _member(nobody, "a", stage_timeout=5.0, clock=clock) as a:
        assert await a.wait_staged(KEY, D1, 100.0) == Decision(Verdict.ALONE)
        assert clock.monotonic() >= 5.0
        assert a.metrics.etcd_up._value.get() == 0
        status = a.status()
        assert status["connected"] is False
        assert "127.0.0.1" in status["last_error"]


async def test_the_fleet_view_for_health_is_none_when_etcd_is_unreachable() -> None:
    """/health then leaves the fleet unjudged (healthy): every node would go 503 at once."""
    nobody = f"http://127.0.0.1:{free_port()}"
    async with _member(nobody, "a") as a, asyncio.timeout(5):
        assert await a.view() is None


async def test_a_node_behind_the_fleet_polls_again_instead_of_going_live(
    mirror: Mirror, etcd: Etcd
) -> None:
    """a stages generation 1 and waits for b; b sees generation 2 first and stages it:
    a must not make 1 live (b never had its files), it polls again and meets b on 2."""
    specs = simple_specs("pkg", 6, payload=1500)
    first = hashlib.sha256(mirror.tree.put(KEY, specs)).hexdigest()
    configs = {
        name: parse_config(
            config_dict(mirror.tmp / name, mirror.origin.url, mirror.keys, [_repo()])
        )
        for name in "ab"
    }
    async with (
        _member(etcd.url, "a") as fleet_a,
        _member(etcd.url, "b") as fleet_b,
        open_runtime(configs["a"], log=mirror.logs.logger(), barrier=fleet_a) as a,
        open_runtime(configs["b"], log=mirror.logs.logger(), barrier=fleet_b) as b,
        EtcdClient.open([etcd.url]) as client,
        asyncio.TaskGroup() as group,
    ):
        await fleet_a.join()
        await fleet_b.join()
        syncing = group.create_task(a.engine.sync_arch(KEY))
        await until(functools.partial(_has, client, first, "a"), 10, "a staged generation 1")
        second = hashlib.sha256(mirror.tree.put(KEY, evolve(specs, 1))).hexdigest()
        result_b = await b.engine.sync_arch(KEY)
        result_a = await syncing
    assert (result_a.outcome, result_b.outcome) == ("published", "published")
    for name in "ab":
        index = configs[name].publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz")
        assert hashlib.sha256(index.read_bytes()).hexdigest() == second
    superseded = mirror.logs.events("fleet.stage.superseded")
    assert [e["nodes"] for e in superseded] == [["b"]]
    assert fleet_a.outcomes == {"superseded": 1, "all": 1}


async def test_a_one_shot_sync_takes_part_and_leaves(mirror: Mirror, etcd: Etcd) -> None:
    index = mirror.tree.put(KEY, simple_specs("pkg", 4, payload=1000))
    data = _config(mirror, {"etcd": [etcd.url], "node": "once", "stage_timeout": 30})
    path = write_yaml(mirror.tmp / "once.yaml", data)
    process = await spawn_mirrord("sync", "--config", str(path), stdout=PIPE, stderr=PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, (out + err).decode()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert [e["outcome"] for e in events if e["event"] == "fleet.stage.done"] == ["all"]
    published = parse_config(data).publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz")
    assert published.read_bytes() == index
    async with EtcdClient.open([etcd.url]) as client:
        assert await client.range_prefix("/mirrord/nodes/") == {}  # its lease revoked at exit


# --- three real daemons, one live origin, a reader that picks a node per file ----------


@dataclass
class Node:
    name: str
    root: Path
    config_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def published(self) -> Path:
        return self.root / "published"

    @property
    def log(self) -> Path:
        return self.root / "mirrord.log"

    def digest(self) -> str | None:
        try:
            data = self.published.joinpath(*KEY.parts, "APKINDEX.tar.gz").read_bytes()
        except FileNotFoundError:
            return None
        return hashlib.sha256(data).hexdigest()

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await spawn_mirrord(
                "run", "--config", str(self.config_path), stdout=out.fileno(), stderr=out.fileno()
            )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await self.process.wait() == -signal.SIGKILL
        self.process = None

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            assert await self.process.wait() == 0
            self.process = None

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found


def _node(mirror: Mirror, etcd: Etcd, name: str, **extra: Any) -> Node:
    root = mirror.tmp / f"node-{name}"
    settings = {
        "interval": 1,
        # A node back after missing generations sees several packages dropped at once.
        "publish": {"max_delete_fraction": 1.0},
        "log": {"format": "json", "level": "info"},
        "fleet": {"etcd": [etcd.url], "node": name, "stage_timeout": 8, "lease_ttl": 2},
        **extra,
    }
    data = config_dict(root, mirror.origin.url, mirror.keys, [_repo()], **settings)
    root.mkdir()
    return Node(name, root, write_yaml(root / "mirrord.yaml", data))


def _repo() -> dict[str, Any]:
    return {"branch": KEY.branch, "repos": [KEY.repo], "arches": [KEY.arch]}


GENERATIONS = 22
KILL_AT, RESTART_AT = 6, 10


async def test_three_nodes_never_serve_an_index_whose_files_another_node_lacks(
    mirror: Mirror, etcd: Etcd
) -> None:
    specs = simple_specs("pkg", 12, payload=2500)
    first = hashlib.sha256(mirror.tree.put(KEY, specs)).hexdigest()
    # b downloads slowly, so a and c really stage first and wait for it.
    slow = {"fetch": {"rate_limit": "20KB/s", "burst": "4KB"}}
    watched = {  # what an operator of a looks at: its metrics and `mirrord ctl status`
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "control": {"socket": str(mirror.tmp / "a.sock")},
    }
    nodes = {
        "a": _node(mirror, etcd, "a", **watched),
        "b": _node(mirror, etcd, "b", **slow),
        "c": _node(mirror, etcd, "c"),
    }
    healthy = set(nodes)  # what a CDN's health check would send requests to
    lock = threading.Lock()
    pick = random.Random(16)
    stop = threading.Event()

    def fetch(path: str) -> bytes | None:
        if path.endswith("APKINDEX.tar.gz"):
            stop.wait(0.005)  # between rounds: leave the two cores to the daemons
        with lock:
            node = nodes[pick.choice(sorted(healthy))]
        try:
            return node.published.joinpath(path).read_bytes()
        except FileNotFoundError:
            return None

    def live(names: set[str], digest: str) -> Callable[[], bool]:
        return lambda: all(nodes[n].digest() == digest for n in names)

    stats = ReaderStats()
    keyring = Keyring.load(mirror.keys)
    generations: list[str] = []
    try:
        for node in nodes.values():
            await node.start()
        await until(live(healthy, first), 30, "the first generation everywhere")
        async with EtcdClient.open([etcd.url]) as client, asyncio.TaskGroup() as group:
            reader = group.create_task(
                asyncio.to_thread(read_until, stop, fetch, str(KEY), keyring, stats)
            )
            try:
                for step in range(1, GENERATIONS + 1):
                    specs = evolve(specs, step)
                    digest = hashlib.sha256(mirror.tree.put(KEY, specs)).hexdigest()
                    generations.append(digest)
                    if step == KILL_AT:  # c dies mid-generation: staged, not yet live
                        staged_c = functools.partial(_has, client, digest, "c")
                        await until(staged_c, 20, "c staged the generation")
                        with lock:
                            healthy.discard("c")
                        await nodes["c"].kill()
                    if step == RESTART_AT:  # c comes back behind, in the middle of a generation
                        await nodes["c"].start()
                    await until(live(healthy, digest), 30, f"generation {step} live")
                    if step >= RESTART_AT and "c" not in healthy:
                        await until(live({"c"}, digest), 30, "c caught up")
                        with lock:
                            healthy.add("c")
                    assert await asyncio.to_thread(stats.wait_for_round, digest, 30)
            finally:
                stop.set()
            await reader
            found = samples(await scrape(f"http://{watched['metrics']['listen']}"))
            page = await _fetch_page(f"http://{watched['metrics']['listen']}/")
            status = await spawn_mirrord(
                "ctl", "--socket", watched["control"]["socket"], "status", stdout=PIPE
            )
            status_text = (await status.communicate())[0].decode()
    finally:
        stop.set()
        for node in nodes.values():
            await node.stop()

    assert stats.problems == []
    assert len(set(generations)) == GENERATIONS
    assert set(generations) <= stats.indexes_seen
    assert stats.files_checked > GENERATIONS * 12
    latest = mirror.tree.arch_dir(KEY).joinpath("APKINDEX.tar.gz").read_bytes()
    for node in nodes.values():
        assert node.digest() == hashlib.sha256(latest).hexdigest()
        report = check_published(load_config(node.config_path))
        assert report.ok, report.problems
    # The fast nodes waited for the slow one; c joined again after its restart; etcd
    # was always there.
    waited = [e for n in "ac" for e in nodes[n].events("fleet.stage.waiting")]
    assert any("b" in e["missing"] for e in waited)
    assert len(nodes["c"].events("fleet.joined")) >= 2
    assert [e for n in nodes.values() for e in n.events("fleet.stage.alone")] == []
    labels = {"branch": KEY.branch, "repo": KEY.repo, "arch": KEY.arch}
    assert value(found, "mirrord_fleet_barriers_total", **labels, outcome="all") >= GENERATIONS - 5
    assert value(found, "mirrord_fleet_etcd_up") == 1
    assert value(found, "mirrord_fleet_members") == 3
    (line,) = [x for x in status_text.splitlines() if x.lstrip().startswith("fleet")]
    assert "node a" in line and "3 members (a, b, c)" in line, line
    ((who, (tone, shown)),) = table_rows(page, "fleet")  # the status page, in the same words
    assert who == ("service", "a")
    assert tone == ("warning" if "last left out" in line else "ok"), (tone, line)
    assert shown.split(", staged: ")[0] == line.split(": ", 1)[1].split(", staged: ")[0]


async def _fetch_page(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def _has(client: EtcdClient, digest: str, node: str) -> bool:
    return node in await _staged(client, digest)


# --- GET /health: a node the others went live without -----------------------------------


async def _health(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    url = f"http://{daemon.config.metrics.listen}/health"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        return response.status, await response.json()


async def test_a_node_left_out_answers_503_until_it_catches_up(mirror: Mirror, etcd: Etcd) -> None:
    """b's clock is fake (it polls only when asked); a goes live with generation 2 without b:
    once a has served it longer than the grace, b's /health says so; a's stays 200."""
    specs = simple_specs("pkg", 4, payload=1000)
    mirror.tree.put(KEY, specs)

    def config(name: str, stage_timeout: float) -> Path:
        fleet = {"etcd": [etcd.url], "node": name, "stage_timeout": stage_timeout, "lease_ttl": 60}
        return daemon_config(
            mirror,
            KEY,
            storage={"path": str(mirror.tmp / name / "storage")},
            # the next generation drops packages: not a mass deletion to refuse here
            publish={"path": str(mirror.tmp / name / "published"), "max_delete_fraction": 1.0},
            control={"socket": str(mirror.tmp / f"{name}.sock")},
            fleet=fleet,
        )

    clock_b = FakeClock(start=time.time())  # b's grace is 30 s (its stage_timeout) of this clock
    async with running_daemon(mirror, config("b", 30), clock=clock_b) as b:
        await synced(b, 1)  # alone in the fleet: live at once
        assert await _health(b) == (200, {"healthy": True, "fleet": "checked"})
        async with running_daemon(mirror, config("a", 0.1)) as a:  # a real clock, a short wait
            await synced(a, 1)  # b staged generation 1 too: all
            mirror.tree.put(KEY, evolve(specs, 1))
            await ctl(a, "sync")
            await synced(a, 2)
            assert a.fleet is not None and a.fleet.outcomes == {"all": 1, "left_out": 1}
            async with EtcdClient.open([etcd.url]) as client:
                live = await client.range_prefix(f"/mirrord/live/{KEY}/")
            assert sorted(live) == [f"/mirrord/live/{KEY}/a", f"/mirrord/live/{KEY}/b"]
            since = json.loads(live[f"/mirrord/live/{KEY}/a"])["since"]
            assert await _health(a) == (200, {"healthy": True, "fleet": "checked"})

            clock_b.advance(since + 30 - clock_b.time())  # exactly the grace: not yet
            assert await _health(b) == (200, {"healthy": True, "fleet": "checked"})
            clock_b.advance(1)
            status, body = await _health(b)
            assert status == 503, body
            (reason,) = body["reasons"]
            assert reason.startswith(f"{KEY} is behind the fleet: node b serves the index of ")
            assert "node(s) a have served the newer one of " in reason
            assert reason.endswith("(more than the 30 s grace)")
            found = samples(await scrape(f"http://{b.config.metrics.listen}"))
            assert value(found, "mirrord_healthy") == 0

            await ctl(b, "sync")  # b catches up: a staged generation 2, so b goes live at once
            await synced(b, 2)
            assert await _health(b) == (200, {"healthy": True, "fleet": "checked"})
            assert b.fleet is not None and b.fleet.outcomes == {"all": 2}


async def test_a_restarted_node_says_at_once_what_it_serves(mirror: Mirror, etcd: Etcd) -> None:
    """Its live key went with its old lease; the new lease carries it again before any
    publish, with the time the index first went live, so peers judge /health by it."""
    mirror.tree.put(KEY, simple_specs("pkg", 3, payload=1000))
    config = daemon_config(mirror, KEY, fleet={"etcd": [etcd.url], "node": "a", "lease_ttl": 3})
    prefix = f"/mirrord/live/{KEY}/"
    async with EtcdClient.open([etcd.url]) as client:
        async with running_daemon(mirror, config) as a:
            await synced(a, 1)
            before = await client.range_prefix(prefix)
            assert list(before) == [prefix + "a"]
        assert await client.range_prefix(prefix) == {}  # revoked with the lease at the stop

        restarted = time.time()
        async with running_daemon(mirror, config) as a:
            await until(lambda: client.range_prefix(prefix), 10, "a's live key again")
            after = json.loads((await client.range_prefix(prefix))[prefix + "a"])
            first = json.loads(before[prefix + "a"])
            assert (after["digest"], after["origin_mtime"]) == (
                first["digest"],
                first["origin_mtime"],
            )
            # since: when the index went live (recorded a moment after the key was put), not now
            assert abs(after["since"] - first["since"]) < 1.0 and after["since"] < restarted
            assert a.fleet is not None and a.fleet.outcomes == {}  # nothing went live again
