"""A flaky origin, one fault at a time: retries, backoff, resume and clear failures.

The origin is a real aiohttp server on loopback that injects the fault; the
clock is fake (backoff sleeps are recorded, not waited for). In every case
nothing corrupt is stored or published, and the pass either completes or
fails naming the package.
"""

from __future__ import annotations

import pytest

from mirrord.core.clock import FakeClock
from mirrord.core.config import Config
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import PackageSpec, simple_specs
from mirrord.sync.status import ArchResult
from tests.helpers import Mirror, check_published, package_key_of, stored_objects

KEY = ArchKey("v3.20", "main", "x86_64")
TARGET = PackageSpec("target", "2.0-r0", payload=200_000, seed=31337)
OTHERS = simple_specs("other", 3, payload=3000)
TARGET_PATH = f"{KEY}/{TARGET.filename}"


def received(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "mirrord_fetched_bytes_total",
        {"branch": KEY.branch, "repo": KEY.repo, "arch": KEY.arch, "outcome": "received"},
    )
    return value or 0.0


def retries(metrics: Metrics, reason: str) -> float:
    return (
        metrics.registry.get_sample_value("mirrord_fetch_retries_total", {"reason": reason}) or 0.0
    )


class Scenario:
    def __init__(self, mirror: Mirror, **fetch: object) -> None:
        self.mirror = mirror
        mirror.tree.put(KEY, [*OTHERS, TARGET])
        self.size = len(mirror.tree.built(TARGET).data)
        self.total = sum(len(mirror.tree.built(s).data) for s in [*OTHERS, TARGET])
        self.config: Config = mirror.config(
            KEY, fetch={"read_timeout": 0.5, "attempts": 4, "retry_max_time": 300, **fetch}
        )
        self.clock = FakeClock(autojump=True)
        self.metrics = Metrics()

    async def sync(self) -> ArchResult:
        (result,) = await self.mirror.sync(self.config, clock=self.clock, metrics=self.metrics)
        return result

    def target_requests(self) -> list[dict[str, str]]:
        return [dict(r.headers) for r in self.mirror.origin.requests_for(TARGET_PATH)]

    def assert_published_intact(self) -> None:
        report = check_published(self.config)
        assert report.ok and report.files == 4, report.problems

    def assert_nothing_published(self) -> None:
        assert not self.config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz").exists()
        good = package_key_of(self.mirror.tree.built(TARGET).data)
        assert all(
            sha == good or size != self.size
            for sha, size in stored_objects(self.config.storage.path).items()
        )


async def test_a_500_then_success(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(TARGET_PATH, Fault.http(500))
    assert (await world.sync()).outcome == "published"
    assert len(world.target_requests()) == 2
    assert retries(world.metrics, "http_500") == 1
    world.assert_published_intact()


async def test_a_429_with_retry_after_is_honoured(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(TARGET_PATH, Fault.http(429, **{"Retry-After": "7"}))
    assert (await world.sync()).outcome == "published"
    assert 7.0 in world.clock.slept
    assert retries(world.metrics, "http_429") == 1
    world.assert_published_intact()


async def test_a_reset_mid_body_resumes_with_range(mirror: Mirror) -> None:
    world = Scenario(mirror)
    cut = 120_000
    mirror.origin.add_fault(TARGET_PATH, Fault.reset(after=cut))
    assert (await world.sync()).outcome == "published"
    first, second = world.target_requests()
    assert "Range" not in first
    assert second["Range"] == f"bytes={cut}-"
    assert second["If-Range"].startswith('"')  # the strong ETag of the first response
    assert [r.status for r in mirror.origin.requests_for(TARGET_PATH)] == [200, 206]
    assert received(world.metrics) == world.total  # no byte fetched twice
    assert received(world.metrics) < world.total + world.size
    world.assert_published_intact()


async def test_a_stall_longer_than_the_read_timeout_is_retried_and_resumed(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(TARGET_PATH, Fault.stall(after=50_000))
    result = await world.sync()
    assert result.outcome == "published", result.error
    assert world.target_requests()[1]["Range"] == "bytes=50000-"
    assert retries(world.metrics, "network") == 1
    world.assert_published_intact()


async def test_a_short_body_with_a_matching_content_length_is_refetched(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(TARGET_PATH, Fault.truncate(length=1000))
    assert (await world.sync()).outcome == "published"
    assert len(world.target_requests()) == 2
    assert "Range" not in world.target_requests()[1]  # a fresh start, not a resume
    world.assert_published_intact()


async def test_wrong_bytes_once_then_right(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(TARGET_PATH, Fault.corrupt())
    assert (await world.sync()).outcome == "published"
    assert len(world.target_requests()) == 2
    world.assert_published_intact()


async def test_wrong_bytes_twice_fails_the_arch_naming_the_package(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(TARGET_PATH, Fault.corrupt(), Fault.corrupt())
    result = await world.sync()
    assert result.outcome == "failed"
    assert result.error is not None and TARGET.filename in result.error
    assert "mismatch" in result.error
    world.assert_nothing_published()


@pytest.mark.parametrize("status", [404, 403])
async def test_a_permanent_error_fails_at_once(mirror: Mirror, status: int) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(TARGET_PATH, Fault.http(status))
    result = await world.sync()
    assert result.outcome == "failed"
    assert result.error is not None and TARGET.filename in result.error
    assert f"HTTP {status}" in result.error
    assert len(world.target_requests()) == 1
    assert world.clock.slept == []
    world.assert_nothing_published()


async def test_packages_the_origin_has_not_uploaded_yet_are_waited_for(mirror: Mirror) -> None:
    """Alpine's origin uploads the index first: a listed package can 404 for a while."""
    world = Scenario(mirror, missing_grace=600)
    assert (await world.sync()).outcome == "published"
    newer = TARGET.bumped()
    mirror.tree.put(KEY, [*OTHERS, newer])
    mirror.origin.add_fault(f"{KEY}/{newer.filename}", Fault.http(404), Fault.http(404))
    world.clock.slept.clear()
    result = await world.sync()
    assert result.outcome == "published", result.error
    assert len(mirror.origin.requests_for(f"{KEY}/{newer.filename}")) == 3
    assert world.clock.slept == [5.0, 10.0]  # asked again with backoff, not failed
    waits = mirror.logs.events("sync.arch.waiting_for_origin")
    assert [w["missing"] for w in waits] == [1, 1] and waits[0]["first"] == newer.filename
    assert not mirror.logs.events("sync.arch.failed")
    report = check_published(world.config)
    assert report.ok and report.files == 4


async def test_a_package_still_missing_after_the_grace_fails_and_the_snapshot_stays(
    mirror: Mirror,
) -> None:
    world = Scenario(mirror, missing_grace=30)
    assert (await world.sync()).outcome == "published"
    before = world.config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz").read_bytes()
    newer = TARGET.bumped()
    mirror.tree.put(KEY, [*OTHERS, newer])
    mirror.origin.add_fault(f"{KEY}/{newer.filename}", *[Fault.http(404)] * 50)
    world.clock.slept.clear()
    result = await world.sync()
    assert result.outcome == "failed" and result.error is not None
    assert "still missing at the origin after fetch.missing_grace (30 s)" in result.error
    assert "HTTP 404" in result.error and newer.filename in result.error
    assert sum(world.clock.slept) == pytest.approx(30)
    index = world.config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz")
    assert index.read_bytes() == before  # the last good snapshot keeps being served
    world.assert_published_intact()


async def test_only_not_found_is_waited_for(mirror: Mirror) -> None:
    world = Scenario(mirror, missing_grace=600)
    mirror.origin.add_fault(TARGET_PATH, Fault.http(403))
    result = await world.sync()
    assert result.outcome == "failed" and "HTTP 403" in (result.error or "")
    assert world.clock.slept == []


async def test_an_origin_without_range_support_starts_over(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.supports_range = False
    cut = 120_000
    mirror.origin.add_fault(TARGET_PATH, Fault.reset(after=cut))
    assert (await world.sync()).outcome == "published"
    assert world.target_requests()[1]["Range"] == f"bytes={cut}-"
    assert [r.status for r in mirror.origin.requests_for(TARGET_PATH)] == [200, 200]
    assert received(world.metrics) == world.total + cut
    world.assert_published_intact()


async def test_retries_stop_at_the_time_budget(mirror: Mirror) -> None:
    world = Scenario(mirror, attempts=50, retry_max_time=20)
    mirror.origin.add_fault(TARGET_PATH, *[Fault.http(503)] * 50)
    result = await world.sync()
    assert result.outcome == "failed" and result.error is not None
    assert "HTTP 503" in result.error and TARGET.filename in result.error
    attempts = len(world.target_requests())
    assert 3 <= attempts < 50
    assert sum(world.clock.slept) < 20 + 30  # the budget, plus at most one backoff step


async def test_a_transient_index_failure_is_retried(mirror: Mirror) -> None:
    world = Scenario(mirror)
    mirror.origin.add_fault(f"{KEY}/APKINDEX.tar.gz", Fault.http(502), Fault.reset(after=10))
    assert (await world.sync()).outcome == "published"
    assert len(mirror.origin.requests_for(f"{KEY}/APKINDEX.tar.gz")) == 3
    world.assert_published_intact()


async def test_a_package_vanishing_mid_pass_is_retried_with_the_new_index(mirror: Mirror) -> None:
    world = Scenario(mirror)
    (mirror.tree.arch_dir(KEY) / TARGET.filename).unlink()  # the origin moved on
    first = await world.sync()
    assert first.outcome == "failed" and "HTTP 404" in (first.error or "")
    mirror.tree.put(KEY, [*OTHERS, TARGET.bumped()])
    second = await world.sync()
    assert second.outcome == "published", second.error
    assert check_published(world.config).files == 4


async def test_waiting_for_a_free_connection_is_not_a_connect_timeout(mirror: Mirror) -> None:
    """More jobs than connections queue in the pool; only the TCP connect is timed."""
    specs = simple_specs("slow", 4, payload=2000)
    mirror.tree.put(KEY, specs)
    for spec in specs:
        mirror.origin.add_fault(f"{KEY}/{spec.filename}", Fault.delay(0.3))
    config = mirror.config(
        KEY, fetch={"concurrency": 4, "per_host": 1, "connect_timeout": 0.2, "attempts": 1}
    )
    metrics = Metrics()
    (result,) = await mirror.sync(config, metrics=metrics)
    assert result.outcome == "published", result.error
    assert len(mirror.origin.package_requests()) == 4  # one each: nothing timed out
    assert mirror.origin.max_active_packages == 1
