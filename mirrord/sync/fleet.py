"""Fleet mode: this node's membership in etcd, and the barrier between staging and going live.

Keys (under ``fleet.prefix``), all attached to this node's lease, so a node
that dies drops out of the fleet after ``lease_ttl``:

- ``<prefix>/nodes/<node>``: membership, kept alive by ``run`` (a service);
- ``<prefix>/staged/<branch>/<repo>/<arch>/<index sha256>/<node>``: this
  node has every file of that index linked and durable. The value holds the
  origin's Last-Modified of the index, which orders generations.
- ``<prefix>/live/<branch>/<repo>/<arch>/<node>``: the index of that arch this node
  serves, ``{"digest", "origin_mtime", "since"}``, put when it goes live (and put
  again on a new lease). The others read it for ``GET /health``: a node that a
  live member has been ahead of for longer than the grace was left out
  (``mirrord.sync.health``).

``wait_staged`` puts our key, then reads the fleet until ``decide`` says go
(polling with a doubling pause on the injectable clock). etcd unreachable:
we keep trying until ``stage_timeout``, then go live alone and say so (log,
metric, ``ctl status``): a node never hangs on the coordination service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.config import FleetConfig
from mirrord.core.errors import EtcdError, EtcdLeaseLostError
from mirrord.core.metrics import FleetMetrics, Metrics
from mirrord.core.model import ArchKey
from mirrord.publish.fleetplan import Decision, StagedIndex, Verdict, decide
from mirrord.sync.etcd import EtcdClient
from mirrord.sync.health import FleetView, LiveIndex

POLL_FIRST = 0.02  # seconds before the first look again; doubles up to POLL_MAX
POLL_MAX = 0.5
VIEW_FRESH = 1.0  # seconds ``view`` answers from its last read of the fleet
VIEW_TIMEOUT = 1.0  # seconds ``view`` waits for etcd (a /health request waits on it)


@dataclass
class LeftOut:
    arch: str
    nodes: tuple[str, ...]
    at: float  # unix time


@dataclass
class FleetMember:
    config: FleetConfig
    etcd: EtcdClient
    clock: Clock
    log: FilteringBoundLogger
    metrics: FleetMetrics
    connected: bool = False
    last_error: str | None = None
    members: tuple[str, ...] = ()  # as last read
    outcomes: dict[str, int] = field(default_factory=dict)
    last_left_out: LeftOut | None = None
    _lease: int | None = None
    _lease_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _mine: dict[str, set[str]] = field(default_factory=dict)  # arch -> our staged keys
    _live: dict[str, str] = field(default_factory=dict)  # arch -> our live key's value
    _live_unsent: set[str] = field(default_factory=set)  # arches ``serving`` added since
    _view: tuple[float, FleetView | None] | None = None  # (monotonic read at, what was read)
    _view_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _key(self, *parts: str) -> str:
        return "/".join((self.config.prefix, *parts))

    # --- membership ---------------------------------------------------------------------

    async def join(self) -> int:
        """Hold a lease and the membership key on it (again, once it expired); its id."""
        async with self._lease_lock:
            if self._lease is None:
                lease = await self.etcd.grant(self.config.lease_ttl)
                since = json.dumps({"since": self.clock.time()})
                await self.etcd.put(self._key("nodes", self.config.node), since, lease)
                for arch in sorted(self._live):  # what we serve, again
                    await self._put_live(arch, lease)
                self._live_unsent.clear()
                self._lease = lease
                self._mine.clear()  # keys on an expired lease are gone
                self.log.info("fleet.joined", node=self.config.node, lease=lease)
            return self._lease

    async def run(self) -> None:
        """Keep the lease (and so the membership) alive; until cancelled."""
        while True:
            try:
                lease = await self.join()
                if await self.etcd.keepalive(lease) <= 0:
                    await self._forget_lease(lease)
                    continue
                self._note_reachable()
                await self._put_unsent(lease)
            except EtcdError as error:
                self._note_unreachable(error)
            await self.clock.sleep(self.config.lease_ttl / 3)

    async def _forget_lease(self, lease: int) -> None:
        """It expired (we were cut off longer than its TTL): the next ``join`` takes a new one."""
        self.log.warning("fleet.lease.expired", lease=lease)
        async with self._lease_lock:
            if self._lease == lease:
                self._lease = None

    async def leave(self) -> None:
        """Revoke the lease: the others stop waiting for us at once, not after its TTL."""
        if self._lease is not None:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(self._lease)
            self._lease = None

    def _note_reachable(self) -> None:
        if not self.connected:
            self.log.info("fleet.etcd.connected", endpoint=self.etcd.endpoint)
        self.connected = True
        self.metrics.etcd_up.set(1)

    def _note_unreachable(self, error: EtcdError) -> None:
        if self.connected or self.last_error != str(error):
            self.log.warning("fleet.etcd.unreachable", error=str(error))
        self.connected = False
        self.last_error = str(error)
        self.metrics.etcd_up.set(0)

    # --- the barrier -----------------------------------------------------------------

    async def _members(self) -> frozenset[str]:
        prefix = self._key("nodes", "")
        return frozenset(k[len(prefix) :] for k in await self.etcd.range_prefix(prefix))

    async def _read(self, arch: str) -> tuple[frozenset[str], list[StagedIndex]]:
        members = await self._members()
        staged_prefix = self._key("staged", arch, "")
        staged: list[StagedIndex] = []
        for name, value in (await self.etcd.range_prefix(staged_prefix)).items():
            digest, _, node = name[len(staged_prefix) :].partition("/")
            try:
                mtime = json.loads(value).get("origin_mtime")
            except (ValueError, AttributeError):
                mtime = None
            staged.append(
                StagedIndex(node, digest, float(mtime) if isinstance(mtime, int | float) else None)
            )
        return members, staged

    async def _look(
        self, arch: str, digest: str, origin_mtime: float | None, waited: float
    ) -> Decision:
        lease = await self.join()
        mine = self._key("staged", arch, digest, self.config.node)
        if mine not in self._mine.get(arch, set()):
            value = json.dumps({"origin_mtime": origin_mtime})
            try:
                await self.etcd.put(mine, value, lease)
            except EtcdLeaseLostError:
                await self._forget_lease(lease)
                lease = await self.join()
                await self.etcd.put(mine, value, lease)
            self._mine.setdefault(arch, set()).add(mine)
        members, staged = await self._read(arch)
        self.members = tuple(sorted(members))
        self.metrics.members.set(len(members))
        if not any(s.node == self.config.node and s.digest == digest for s in staged):
            self._mine[arch].discard(mine)  # our lease expired meanwhile: put it again
        return decide(
            me=self.config.node,
            digest=digest,
            origin_mtime=origin_mtime,
            members=members,
            staged=staged,
            waited=waited,
            timeout=self.config.stage_timeout,
        )

    async def wait_staged(self, key: ArchKey, digest: str, origin_mtime: float | None) -> Decision:
        """Record that this node staged ``digest``; return once it may go live (or must not)."""
        arch = str(key)
        log = self.log.bind(arch=arch, index=digest[:12])
        started = self.clock.monotonic()
        pause = POLL_FIRST
        told: tuple[str, ...] | None = None
        while True:
            waited = self.clock.monotonic() - started
            try:
                decision = await self._look(arch, digest, origin_mtime, waited)
                self._note_reachable()
            except EtcdError as error:
                self._note_unreachable(error)
                decision = Decision(
                    Verdict.ALONE if waited >= self.config.stage_timeout else Verdict.WAIT
                )
            if decision.verdict is not Verdict.WAIT:
                break
            if decision.missing and decision.missing != told:
                told = decision.missing
                log.info("fleet.stage.waiting", missing=list(told))
            remaining = self.config.stage_timeout - waited
            await self.clock.sleep(max(min(pause, remaining), 0.0))
            pause = min(pause * 2, POLL_MAX)
        waited = self.clock.monotonic() - started
        self._record(key, decision, waited, log)
        return decision

    def _record(
        self, key: ArchKey, decision: Decision, waited: float, log: FilteringBoundLogger
    ) -> None:
        verdict = decision.verdict
        self.outcomes[verdict.value] = self.outcomes.get(verdict.value, 0) + 1
        self.metrics.barriers.labels(**Metrics.labels(key), outcome=verdict.value).inc()
        self.metrics.wait.observe(waited)
        if verdict is Verdict.GO_WITHOUT:
            self.last_left_out = LeftOut(str(key), decision.missing, self.clock.time())
            log.warning(
                "fleet.stage.left_out", nodes=list(decision.missing), waited=round(waited, 3)
            )
        elif verdict is Verdict.ALONE:
            log.error("fleet.stage.alone", waited=round(waited, 3), error=self.last_error)
        else:
            log.info("fleet.stage.done", outcome=verdict.value, waited=round(waited, 3))

    def serving(self, key: ArchKey, digest: str, origin_mtime: float | None, since: float) -> None:
        """At start: what this node already serves (its live keys went with its old lease).

        No etcd I/O here: the membership loop puts it at its next turn, so a restarted
        node is seen at once, not only at its next publish.
        """
        arch = str(key)
        if arch not in self._live:
            self._live[arch] = _live_value(digest, origin_mtime, since)
            self._live_unsent.add(arch)

    async def _put_unsent(self, lease: int) -> None:
        for arch in sorted(self._live_unsent):
            await self._put_live(arch, lease)
            self._live_unsent.discard(arch)

    async def _put_live(self, arch: str, lease: int) -> None:
        """Our live key of ``arch``: the value ``serving`` or ``went_live`` noted."""
        await self.etcd.put(self._key("live", arch, self.config.node), self._live[arch], lease)

    async def went_live(self, key: ArchKey, digest: str, origin_mtime: float | None) -> None:
        """Our index of ``key`` is live: say so (our live key), forget our older staged keys."""
        arch = str(key)
        # kept: a new lease takes it again (``join``)
        self._live[arch] = _live_value(digest, origin_mtime, self.clock.time())
        self._live_unsent.discard(arch)
        try:
            lease = await self.join()
            try:
                await self._put_live(arch, lease)
            except EtcdLeaseLostError:
                await self._forget_lease(lease)
                return
        except EtcdError as error:
            self._note_unreachable(error)
            return
        current = self._key("staged", arch, digest, self.config.node)
        for old in sorted(self._mine.get(arch, set()) - {current}):
            try:
                await self.etcd.delete(old)
            except EtcdError as error:  # harmless: it goes with the lease at the latest
                self._note_unreachable(error)
                return
            self._mine[arch].discard(old)

    # --- what /health asks -------------------------------------------------------------

    async def view(self) -> FleetView | None:
        """Members and their live indexes; None when etcd does not answer within VIEW_TIMEOUT.

        One read at a time, its answer kept VIEW_FRESH seconds: a balancer probing
        every node often costs etcd one range per node per second at most.
        """
        async with self._view_lock:
            now = self.clock.monotonic()
            if self._view is not None and now - self._view[0] < VIEW_FRESH:
                return self._view[1]
            try:
                async with asyncio.timeout(VIEW_TIMEOUT):
                    view: FleetView | None = await self._read_view()
            except (EtcdError, TimeoutError):
                view = None
            self._view = (self.clock.monotonic(), view)
            return view

    async def _read_view(self) -> FleetView:
        members = await self._members()
        live_prefix = self._key("live", "")
        live: list[LiveIndex] = []
        for name, value in (await self.etcd.range_prefix(live_prefix)).items():
            arch, _, node = name[len(live_prefix) :].rpartition("/")
            try:
                data = json.loads(value)
                mtime, since = data.get("origin_mtime"), float(data["since"])
                digest = str(data["digest"])
            except (ValueError, AttributeError, KeyError, TypeError):
                continue  # not ours to judge by
            origin_mtime = float(mtime) if isinstance(mtime, int | float) else None
            live.append(LiveIndex(node, arch, digest, origin_mtime, since))
        return FleetView(self.config.node, members, tuple(live), self.config.behind_grace)

    def status(self) -> dict[str, Any]:
        """What ``ctl status`` shows under ``fleet``."""
        left = self.last_left_out
        return {
            "node": self.config.node,
            "etcd": self.etcd.endpoint,
            "connected": self.connected,
            "members": list(self.members),
            "barriers": dict(sorted(self.outcomes.items())),
            "last_left_out": None
            if left is None
            else {"arch": left.arch, "nodes": list(left.nodes), "at": left.at},
            "last_error": self.last_error,
        }


@asynccontextmanager
async def open_fleet(
    config: FleetConfig, *, clock: Clock, log: FilteringBoundLogger, metrics: Metrics
) -> AsyncIterator[FleetMember]:
    """The etcd client and this node's membership; leaving revokes the lease."""
    async with EtcdClient.open(config.etcd) as etcd:
        member = FleetMember(
            config, etcd, clock, log.bind(node=config.node), FleetMetrics(metrics.registry)
        )
        try:
            yield member
        finally:
            await member.leave()


def _live_value(digest: str, origin_mtime: float | None, since: float) -> str:
    """A live key's value (what ``_read_view`` reads back)."""
    return json.dumps({"digest": digest, "origin_mtime": origin_mtime, "since": since})
