"""Bounded and fair: connection limits hold, and small arches are not starved by a big one."""

from __future__ import annotations

import pytest

from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from tests.helpers import Mirror

HUGE = ArchKey("edge", "community", "x86_64")
SMALL = [ArchKey("edge", "main", arch) for arch in ("aarch64", "armv7", "riscv64")]


async def test_small_arches_publish_long_before_a_huge_one_finishes(mirror: Mirror) -> None:
    huge = simple_specs("big", 240, payload=20_000)
    mirror.tree.put(HUGE, huge)
    # A slow origin for the huge arch (10 ms a file, 1.2 s in all at concurrency 2): the
    # small arches' index fetch and planning must not race a flood of instant downloads
    # on a loaded machine, so the order below shows turns, not scheduling luck.
    for spec in huge:
        mirror.origin.add_fault(f"{HUGE}/{spec.filename}", Fault.delay(0.01))
    for key in SMALL:
        mirror.tree.put(key, simple_specs(f"small-{key.arch}", 4, arch=key.arch, payload=20_000))
    config = mirror.config(HUGE, *SMALL, fetch={"concurrency": 2})

    results = await mirror.sync(config)

    assert all(r.outcome == "published" for r in results)
    published = [e["arch"] for e in mirror.logs.events("publish.snapshot.done")]
    assert published[-1] == str(HUGE)
    # Each small arch was done while the huge one still had most of its work to do
    # (without turns, the small arches' downloads would come after all 240 of it).
    requests = [r.path for r in mirror.origin.package_requests()]
    assert len(requests) == 240 + 3 * 4
    for key in SMALL:
        last_small = max(i for i, path in enumerate(requests) if path.startswith(f"/{key}/"))
        assert last_small < len(requests) // 2, f"{key} waited behind {last_small} downloads"


@pytest.mark.parametrize(("concurrency", "per_host", "bound"), [(8, 3, 3), (2, 16, 2)])
async def test_downloads_in_flight_stay_within_the_limits(
    mirror: Mirror, concurrency: int, per_host: int, bound: int
) -> None:
    key = ArchKey("v3.20", "main", "x86_64")
    mirror.tree.put(key, simple_specs("pkg", 60, payload=50_000))
    config = mirror.config(key, fetch={"concurrency": concurrency, "per_host": per_host})
    assert (await mirror.sync(config))[0].outcome == "published"
    assert 1 <= mirror.origin.max_active_packages <= bound
