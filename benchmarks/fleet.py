"""What fleet mode's barrier adds to a publish: one node alone against a three-node fleet.

``python -m benchmarks.fleet --generations 30 --work DIR [--output FILE]``

One live origin (the demo's aiohttp server) and a real etcd (Debian's
etcd-server) on 127.0.0.1. For every generation (two packages rebuilt, one
dropped, one added, a new signed index) a lone node (no ``fleet:``) syncs it,
then three fleet nodes sync it side by side, each with its own storage and
publish directories, in this one process. The figures are mirrord's own
``publish.snapshot.done`` ``seconds`` (from every package stored to the index
live: for the fleet, the wait for the slowest node included) and
``fleet.stage.done`` ``waited``, and the etcd requests each publish made.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from mirrord.core.clock import SystemClock
from mirrord.core.config import FleetConfig
from mirrord.core.config.parse import parse_config
from mirrord.core.logs import make_logger
from mirrord.core.metrics import FleetMetrics
from mirrord.core.model import ArchKey
from mirrord.demo.origin import OriginServer
from mirrord.demo.repogen import OriginTree, SigningKey, simple_specs
from mirrord.sync.etcd import EtcdClient
from mirrord.sync.fleet import FleetMember
from mirrord.sync.runtime import Runtime, open_runtime
from tests.etcd import Etcd
from tests.helpers import config_dict
from tests.reader import evolve

KEY = ArchKey("v3.20", "main", "x86_64")
NODES = ("a", "b", "c")


class CountingEtcd(EtcdClient):
    """The JSON gateway client, counting its requests."""

    requests = 0

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        CountingEtcd.requests += 1
        return await super()._call(path, body)


@asynccontextmanager
async def _node(
    root: Path, origin: OriginServer, keys: Path, fleet: FleetMember | None
) -> AsyncIterator[tuple[Runtime, io.StringIO]]:
    data = config_dict(
        root,
        origin.url,
        keys,
        [{"branch": KEY.branch, "repos": [KEY.repo], "arches": [KEY.arch]}],
        log={"format": "json"},
    )
    stream = io.StringIO()
    async with open_runtime(
        parse_config(data), log=make_logger("info", "json", stream), barrier=fleet
    ) as runtime:
        yield runtime, stream


def _events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == name]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(work: Path, generations: int) -> dict[str, Any]:
    key = SigningKey.generate("mirrord-bench")
    tree = OriginTree(work / "origin", key)
    keys = work / "keys"
    key.write_public(keys)
    specs = simple_specs("pkg", 200, payload=4000)
    tree.put(KEY, specs)
    etcd = Etcd(work / "etcd")
    etcd.start()
    try:
        async with AsyncExitStack() as stack:
            origin = await stack.enter_async_context(OriginServer(tree.root))
            lone, lone_log = await stack.enter_async_context(
                _node(work / "lone", origin, keys, None)
            )
            fleet: list[tuple[Runtime, io.StringIO]] = []
            members: list[FleetMember] = []
            for name in NODES:
                client = await stack.enter_async_context(CountingEtcd.open([etcd.url]))
                member = FleetMember(
                    FleetConfig(etcd=(etcd.url,), node=name, stage_timeout=60, lease_ttl=10),
                    client,
                    SystemClock(),
                    make_logger("info", "json", io.StringIO()),
                    FleetMetrics(CollectorRegistry()),
                )
                await member.join()
                members.append(member)
                fleet.append(
                    await stack.enter_async_context(_node(work / name, origin, keys, member))
                )
            group = await stack.enter_async_context(asyncio.TaskGroup())
            leases = [group.create_task(member.run()) for member in members]
            await lone.engine.run_pass()
            await asyncio.gather(*(runtime.engine.run_pass() for runtime, _ in fleet))
            counted = CountingEtcd.requests
            started = asyncio.get_running_loop().time()
            for step in range(1, generations + 1):
                specs = evolve(specs, step)
                tree.put(KEY, specs)
                (result,) = await lone.engine.run_pass()
                assert result.outcome == "published", result.error
                results = await asyncio.gather(*(r.engine.run_pass() for r, _ in fleet))
                assert all(r[0].outcome == "published" for r in results), results
            seconds = asyncio.get_running_loop().time() - started
            for lease in leases:
                lease.cancel()
            requests = CountingEtcd.requests - counted
    finally:
        etcd.stop()
    skip = 1  # the first publish of each is the full sync
    alone = [float(e["seconds"]) for e in _events(lone_log, "publish.snapshot.done")][skip:]
    together = [
        float(e["seconds"]) for _, s in fleet for e in _events(s, "publish.snapshot.done")[skip:]
    ]
    return {
        "generations": generations,
        "alone_median_ms": statistics.median(alone) * 1000,
        "alone_p90_ms": _quantile(alone, 0.9) * 1000,
        "fleet_median_ms": statistics.median(together) * 1000,
        "fleet_p90_ms": _quantile(together, 0.9) * 1000,
        "ratio_median": statistics.median(together) / statistics.median(alone),
        "etcd_requests_per_node_publish": requests / (generations * len(NODES)),
        "added_median_ms": (statistics.median(together) - statistics.median(alone)) * 1000,
        "wall_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None, help="append the figures (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        figures = asyncio.run(measure(Path(work), args.generations))
    figures["load_average"] = os.getloadavg()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.output is not None:
        with args.output.open("a") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
