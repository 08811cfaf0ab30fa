"""May a load balancer or CDN send this node traffic? One pure decision (``GET /health``).

A node is unhealthy when what it serves would hurt a client:

- an arch it has never published (a fresh node in its first sync would 404 everything);
- it is draining or stopping (the balancer should move away before the service stops);
- fleet mode: another live member has served a newer generation of an arch (by the
  origin's Last-Modified, as ``publish.fleetplan`` orders them) for longer than the
  grace. A CDN taking the newer index from that node and asking this one for a
  file would get a 404.

Never unhealthy because the origin is unreachable, an arch is stale versus the
origin, or etcd does not answer: those hit every node at once, and a stale
complete tree beats no tree at all (a CDN with every node out has no origin).
The caller reads the state; this module only judges it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LiveIndex:
    """A fleet member's live index of one arch (``<prefix>/live/<arch>/<node>`` in etcd)."""

    node: str
    arch: str  # branch/repo/arch
    digest: str
    origin_mtime: float | None  # the origin's Last-Modified of it: orders generations
    since: float  # unix time it went live on that node


@dataclass(frozen=True)
class Served:
    """What this node serves of one configured arch."""

    arch: str
    digest: str | None  # sha256 of the live index; None: never published here
    origin_mtime: float | None


@dataclass(frozen=True)
class FleetView:
    """The fleet as read from etcd (None in ``assess`` when it could not be read)."""

    me: str
    members: frozenset[str]
    live: tuple[LiveIndex, ...]
    grace: float  # seconds a member may be ahead before this node is left out


@dataclass(frozen=True)
class Health:
    healthy: bool
    reasons: tuple[str, ...]
    fleet: str  # "off", "checked" or "unreadable" (etcd did not answer: not judged)

    def body(self) -> dict[str, Any]:
        """The JSON ``/health`` answers (and ``ctl status`` shows)."""
        body: dict[str, Any] = {"healthy": self.healthy}
        if self.reasons:
            body["reasons"] = list(self.reasons)
        body["fleet"] = self.fleet
        return body


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def assess(
    served: Iterable[Served],
    *,
    now: float,
    draining: bool = False,
    stopping: bool = False,
    fleet: FleetView | None = None,
    fleet_mode: bool = False,
) -> Health:
    """Healthy unless a reason above holds; each reason is one sentence for people.

    ``fleet_mode`` with ``fleet`` None: etcd could not be read, so the fleet
    is not judged (never unhealthy for that).
    """
    served = list(served)
    reasons: list[str] = []
    if draining:
        reasons.append("draining: this node finishes the syncs in progress, then stops")
    elif stopping:
        reasons.append("stopping: the daemon is shutting down")
    reasons += [
        f"{s.arch} is not served yet: it has never been published on this node"
        for s in served
        if s.digest is None
    ]
    if fleet is not None:
        reasons += _behind(served, fleet, now)
    state = "off" if not fleet_mode else ("checked" if fleet is not None else "unreadable")
    return Health(not reasons, tuple(reasons), state)


def _behind(served: Sequence[Served], fleet: FleetView, now: float) -> list[str]:
    """Reasons for the arches a live member has served newer for longer than the grace."""
    reasons: list[str] = []
    for mine in served:
        if mine.digest is None or mine.origin_mtime is None:
            continue  # never published (said above), or no Last-Modified to order by
        ahead = [
            peer
            for peer in fleet.live
            if peer.arch == mine.arch
            and peer.node != fleet.me
            and peer.node in fleet.members
            and peer.digest != mine.digest
            and peer.origin_mtime is not None
            and peer.origin_mtime > mine.origin_mtime
            and now - peer.since > fleet.grace
        ]
        if not ahead:
            continue
        ahead.sort(key=lambda p: p.node)
        newest = max(p.origin_mtime or 0.0 for p in ahead)
        first = min(p.since for p in ahead)
        nodes = ", ".join(p.node for p in ahead)
        reasons.append(
            f"{mine.arch} is behind the fleet: node {fleet.me} serves the index of "
            f"{utc(mine.origin_mtime)}, node(s) {nodes} have served the newer one of "
            f"{utc(newest)} since {utc(first)} (more than the {fleet.grace:g} s grace)"
        )
    return reasons
