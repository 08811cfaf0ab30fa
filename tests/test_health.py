"""``GET /health``: the decision alone, then the real daemon's HTTP port.

The fleet's part against a real etcd is in ``test_fleet.py``.
"""

from __future__ import annotations

import json

import aiohttp

from mirrord.core.config.parse import load_config
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from mirrord.shell.control.render import status as render_status
from mirrord.sync.health import FleetView, LiveIndex, Served, assess
from tests.daemon_harness import ctl, daemon_config, running_daemon, synced
from tests.helpers import Mirror
from tests.prom import samples, scrape, value
from tests.serving import ShippedNginx

KEY = ArchKey("v3.20", "main", "x86_64")
ARCH = str(KEY)
OTHER = "v3.20/community/x86_64"
NOW = 1_700_000_000.0
D1, D2 = "1" * 64, "2" * 64
T1, T2 = 1_699_990_000.0, 1_699_995_000.0  # origin Last-Modified of two generations


# --- the decision, alone ---------------------------------------------------------------


def _served(digest: str | None = D1, mtime: float | None = T1, arch: str = ARCH) -> Served:
    return Served(arch, digest, mtime if digest else None)


def _fleet(*live: LiveIndex, members: str = "abc", grace: float = 120.0) -> FleetView:
    return FleetView("a", frozenset(members), live, grace)


def _live(node: str, digest: str = D2, mtime: float | None = T2, ago: float = 121.0) -> LiveIndex:
    return LiveIndex(node, ARCH, digest, mtime, NOW - ago)


def test_a_node_serving_every_arch_is_healthy() -> None:
    health = assess([_served(), _served(D2, T2, OTHER)], now=NOW)
    assert (health.healthy, health.reasons, health.fleet) == (True, (), "off")
    assert health.body() == {"healthy": True, "fleet": "off"}


def test_an_arch_never_published_here_is_unhealthy_and_named() -> None:
    health = assess([_served(), _served(None, arch=OTHER)], now=NOW)
    assert not health.healthy
    assert health.reasons == (
        f"{OTHER} is not served yet: it has never been published on this node",
    )
    assert health.body() == {"healthy": False, "reasons": list(health.reasons), "fleet": "off"}


def test_draining_and_stopping_are_unhealthy() -> None:
    draining = assess([_served()], now=NOW, draining=True, stopping=True)
    assert draining.reasons == ("draining: this node finishes the syncs in progress, then stops",)
    stopping = assess([_served()], now=NOW, stopping=True)
    assert stopping.reasons == ("stopping: the daemon is shutting down",)
    both = assess([_served(None)], now=NOW, stopping=True)
    assert len(both.reasons) == 2 and not both.healthy


def test_behind_a_live_member_longer_than_the_grace_names_arch_nodes_and_times() -> None:
    health = assess(
        [_served()], now=NOW, fleet=_fleet(_live("c"), _live("b", ago=500.0)), fleet_mode=True
    )
    assert not health.healthy and health.fleet == "checked"
    assert health.reasons == (
        f"{ARCH} is behind the fleet: node a serves the index of 2023-11-14T19:26:40Z, "
        "node(s) b, c have served the newer one of 2023-11-14T20:50:00Z since "
        "2023-11-14T22:05:00Z (more than the 120 s grace)",
    )


def test_the_grace_boundary() -> None:
    at_grace = assess([_served()], now=NOW, fleet=_fleet(_live("b", ago=120.0)), fleet_mode=True)
    assert at_grace.healthy
    past = assess([_served()], now=NOW, fleet=_fleet(_live("b", ago=120.001)), fleet_mode=True)
    assert not past.healthy
    longer = _fleet(_live("b", ago=500.0), grace=600.0)
    assert assess([_served()], now=NOW, fleet=longer, fleet_mode=True).healthy


def test_only_a_newer_generation_of_a_live_member_counts() -> None:
    cases = {
        "same index": _live("b", digest=D1, mtime=T1),
        "older generation": _live("b", digest=D2, mtime=T1 - 1),
        "same Last-Modified": _live("b", digest=D2, mtime=T1),
        "no Last-Modified": _live("b", mtime=None),
        "not a member (its lease expired)": _live("z"),
        "my own key": _live("a"),
        "another arch": LiveIndex("b", OTHER, D2, T2, NOW - 500),
    }
    for case, peer in cases.items():
        health = assess([_served()], now=NOW, fleet=_fleet(peer), fleet_mode=True)
        assert health.healthy, case
    # Without a Last-Modified of our own there is nothing to order by: not judged.
    assert assess([_served(D1, None)], now=NOW, fleet=_fleet(_live("b")), fleet_mode=True).healthy
    # Never published: said once, not again as "behind".
    never = assess([_served(None)], now=NOW, fleet=_fleet(_live("b")), fleet_mode=True)
    assert len(never.reasons) == 1 and "not served yet" in never.reasons[0]


def test_standalone_and_etcd_unreachable_never_judge_the_fleet() -> None:
    unreadable = assess([_served()], now=NOW, fleet=None, fleet_mode=True)
    assert (unreadable.healthy, unreadable.fleet) == (True, "unreadable")
    # etcd unreachable does not hide the local reasons
    draining = assess([_served()], now=NOW, draining=True, fleet=None, fleet_mode=True)
    assert not draining.healthy
    assert assess([_served()], now=NOW).fleet == "off"


# --- the real daemon ---------------------------------------------------------------------


async def _get(url: str, method: str = "GET") -> tuple[int, dict[str, object] | None]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        body = await response.read()
        return response.status, json.loads(body) if body else None


async def _get_raw(url: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        return response.status, await response.read()


async def test_health_before_the_first_publish_after_it_and_while_draining(
    mirror: Mirror,
) -> None:
    specs = simple_specs("a", 4)
    mirror.tree.put(KEY, specs[:3])
    mirror.origin.add_fault(f"{KEY}/{specs[0].filename}", Fault.stall())
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        url = f"http://{daemon.config.metrics.listen}"
        await mirror.origin.stalled.wait()  # the first sync is downloading
        status, body = await _get(f"{url}/health")
        assert status == 503
        assert body == {
            "healthy": False,
            "reasons": [f"{ARCH} is not served yet: it has never been published on this node"],
            "fleet": "off",
        }
        assert value(samples(await scrape(url)), "mirrord_healthy") == 0

        mirror.origin.release_stalls.set()
        await synced(daemon, 1)
        assert await _get(f"{url}/health") == (200, {"healthy": True, "fleet": "off"})
        assert await _get(f"{url}/health", "HEAD") == (200, None)
        assert value(samples(await scrape(url)), "mirrord_healthy") == 1
        report = await ctl(daemon, "status")
        assert report["health"] == {"healthy": True, "fleet": "off"}
        assert "health: ok (GET /health answers 200)" in render_status(report)

        # Draining with a sync in progress: the daemon still serves, the balancer moves away.
        mirror.origin.stalled.clear()
        mirror.origin.release_stalls.clear()
        mirror.tree.put(KEY, specs)
        mirror.origin.add_fault(f"{KEY}/{specs[3].filename}", Fault.stall())
        await ctl(daemon, "sync")
        await mirror.origin.stalled.wait()
        await ctl(daemon, "drain")
        status, body = await _get(f"{url}/health")
        assert status == 503
        assert body is not None
        assert body["reasons"] == ["draining: this node finishes the syncs in progress, then stops"]
        report = await ctl(daemon, "status")
        assert "health: UNHEALTHY (GET /health answers 503): draining" in render_status(report)
        mirror.origin.release_stalls.set()
        await daemon.stopping.wait()


async def test_the_shipped_nginx_config_answers_the_daemons_verdict(mirror: Mirror) -> None:
    """A balancer probes nginx, the server that serves: it sees the daemon's answer, and
    502 once the daemon is gone."""
    mirror.tree.put(KEY, simple_specs("a", 2))
    config_path = daemon_config(mirror, KEY)
    config = load_config(config_path)
    prefix = mirror.tmp / "nginx"
    with ShippedNginx(config.publish.path, prefix, health=config.metrics.listen) as nginx:
        async with running_daemon(mirror, config_path) as daemon:
            await synced(daemon, 1)
            assert await _get(f"{nginx.url}/health") == (200, {"healthy": True, "fleet": "off"})
        status, _ = await _get_raw(f"{nginx.url}/health")
        assert status == 502
