"""Token bucket, schedule and rate changes, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mirrord.core.clock import FakeClock
from mirrord.core.config import FetchConfig, ScheduleWindow
from mirrord.core.logs import make_logger
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.core.units import parse_rate
from mirrord.demo.repogen import simple_specs
from mirrord.fetch.httpstatus import (
    MAX_RECEIVE_BUFFER,
    MIN_RECEIVE_BUFFER,
    limited_receive_buffer,
    limited_segment,
)
from mirrord.fetch.tcppath import PathSample
from mirrord.fetch.traffic import (
    RateMeter,
    TokenBucket,
    TrafficControl,
    minutes_to_next_edge,
    scheduled_rate,
)
from tests.helpers import LogCapture, Mirror

MB = 1_000_000


async def test_unlimited_bucket_never_sleeps() -> None:
    clock = FakeClock(autojump=True)
    bucket = TokenBucket(None, 1000, clock)
    await bucket.consume(10**9)
    assert clock.slept == []


async def test_bucket_starts_empty_and_holds_half_the_burst() -> None:
    clock = FakeClock(autojump=True)
    bucket = TokenBucket(1000.0, 500, clock)
    await bucket.consume(250)  # a limit begins empty: the receive buffers fill first
    assert clock.monotonic() == pytest.approx(0.25, abs=1e-6)
    clock.advance(10.0)  # idle: the bucket fills to half the burst, no more
    await bucket.consume(250)
    assert clock.monotonic() == pytest.approx(10.25, abs=1e-6)
    await bucket.consume(2000)  # then the rate, 1000 B/s
    assert clock.monotonic() == pytest.approx(12.25, abs=1e-6)


async def test_a_limit_that_begins_starts_with_an_empty_bucket() -> None:
    clock = FakeClock(autojump=True)
    bucket = TokenBucket(None, 1000, clock)
    await bucket.consume(10_000)
    bucket.set_rate(1000.0)
    await bucket.consume(500)
    assert clock.monotonic() == pytest.approx(0.5, abs=1e-6)
    bucket.set_rate(2000.0)  # a change of rate keeps what the bucket holds
    clock.advance(1.0)
    await bucket.consume(500)
    assert clock.monotonic() == pytest.approx(1.5, abs=1e-6)


async def test_bytes_in_any_window_stay_under_burst_plus_rate() -> None:
    clock = FakeClock(autojump=True)
    rate, burst = 20 * MB, 4 * MB
    bucket = TokenBucket(float(rate), burst, clock)
    stamps: list[tuple[float, int]] = []
    for _ in range(4000):  # 256 KiB chunks, as the fetcher reads them
        await bucket.consume(262_144)
        stamps.append((clock.monotonic(), 262_144))
    total_time = stamps[-1][0]
    total = sum(n for _, n in stamps)
    assert total / total_time == pytest.approx(rate, rel=0.01)
    for start, _ in stamps[::50]:
        in_window = sum(n for t, n in stamps if start <= t < start + 1.0)
        assert in_window <= rate + burst // 2  # the other half is the receive buffers'


async def test_a_rate_change_reaches_a_waiting_download_within_a_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 10, clock)  # starts empty
    async with asyncio.TaskGroup() as group:
        waiting = group.create_task(bucket.consume(10_000))  # 1000 s at 10 B/s
        await settle(lambda: clock.sleepers == 1)
        bucket.set_rate(None)
        for _ in range(4):
            clock.advance(0.25)
            if await settle(waiting.done):
                break
    assert waiting.done() and clock.monotonic() <= 1.0


def test_schedule_windows() -> None:
    windows = (
        ScheduleWindow(0, 360, None),
        ScheduleWindow(360, 1440, parse_rate("50MB/s")),
    )
    assert scheduled_rate(windows, 7.0, 0) is None
    assert scheduled_rate(windows, 7.0, 359.9) is None
    assert scheduled_rate(windows, 7.0, 360) == 50 * MB
    assert scheduled_rate(windows, 7.0, 1439.99) == 50 * MB
    assert scheduled_rate((ScheduleWindow(60, 120, 1.0),), 7.0, 30) == 7.0  # gap: the default
    assert minutes_to_next_edge(windows, 100) == 260
    assert minutes_to_next_edge(windows, 400) == 1040
    assert minutes_to_next_edge((ScheduleWindow(60, 120, 1.0),), 130) == 1440 - 130 + 60


async def settle(condition: Callable[[], bool], turns: int = 1000) -> bool:
    """Let the event loop run (no real time passes) until ``condition`` holds."""
    for _ in range(turns):
        if condition():
            return True
        await asyncio.sleep(0)
    return condition()


async def test_traffic_control_follows_the_schedule_edge_and_overrides() -> None:
    clock = FakeClock(start=0.0)
    config = FetchConfig(
        rate_limit=1.0 * MB,
        schedule=(ScheduleWindow(0, 360, None), ScheduleWindow(360, 1440, 50.0 * MB)),
    )
    metrics = Metrics()
    traffic = TrafficControl(
        config,
        clock=clock,
        metrics=metrics,
        log=make_logger("error", "json"),
        minute_of_day=lambda ts: (ts / 60) % 1440,  # UTC-like local time for the test
    )
    async with asyncio.TaskGroup() as group:
        follower = group.create_task(traffic.run())
        assert await settle(lambda: clock.sleepers == 1)  # waiting for the next edge
        assert traffic.bucket.rate is None  # 00:00: unlimited
        clock.advance(6 * 3600 + 1)  # past 06:00
        assert await settle(lambda: traffic.bucket.rate == 50 * MB)
        assert metrics.registry.get_sample_value("mirrord_rate_limit_bytes_per_second") == 50 * MB
        traffic.set_override(5.0 * MB)
        assert traffic.bucket.rate == 5 * MB and traffic.override == 5 * MB
        traffic.clear_override()
        assert traffic.bucket.rate == 50 * MB and traffic.override == "schedule"
        follower.cancel()


def test_rate_meter_window() -> None:
    clock = FakeClock()
    meter = RateMeter(clock, window=5.0)
    for _ in range(10):
        meter.add(1000)
        clock.advance(0.5)
    assert meter.rate() == pytest.approx(10_000 / 5.0)
    clock.advance(10)
    assert meter.rate() == 0 and meter.bytes == 10_000


async def test_the_rate_limit_shapes_a_real_sync(mirror: Mirror) -> None:
    key = ArchKey("v3.20", "main", "x86_64")
    mirror.tree.put(key, simple_specs("pkg", 20, payload=30_000))
    total = sum(len(p.data) for p in mirror.tree.packages(key))
    config = mirror.config(key, fetch={"rate_limit": "100KB/s", "burst": "64KiB"})
    clock = FakeClock(autojump=True)

    (result,) = await mirror.sync(config, clock=clock)

    assert result.outcome == "published"
    expected = total / 100_000  # the bucket starts empty
    assert clock.monotonic() == pytest.approx(expected, rel=0.02)
    assert max(clock.slept) <= 0.25


def test_receive_buffers_under_a_limit_fit_in_half_the_burst_and_segments_fit_them() -> None:
    assert limited_receive_buffer(None, 4 << 20, 16) is None  # unlimited: kernel autotuning
    # the kernel doubles SO_RCVBUF: 16 connections x 2 x 64 KiB = 2 MiB, half the burst
    assert limited_receive_buffer(20e6, 4 << 20, 16) == (4 << 20) // 64
    assert limited_receive_buffer(20e6, 64 << 10, 64) == 16 * 1024  # never absurdly small
    assert limited_receive_buffer(20e9, 1 << 30, 1) == 4 * 1024 * 1024  # nor huge
    # segments: an eighth of the buffer, above Ethernet's at the smallest, and no larger
    # than the kernel takes (TCP_MAXSEG over 32767 is refused)
    assert limited_segment(64 * 1024) == 8 * 1024
    assert limited_segment(MIN_RECEIVE_BUFFER) == 2048 > 1460
    assert limited_segment(MAX_RECEIVE_BUFFER) == 32767


def test_windows_too_small_for_the_round_trip_are_named_once_per_limit() -> None:
    logs = LogCapture()
    metrics = Metrics()
    config = FetchConfig(rate_limit=20.0 * MB, burst=4 << 20, concurrency=64, per_host=16)
    traffic = TrafficControl(config, clock=FakeClock(), metrics=metrics, log=logs.logger())
    sample = metrics.registry.get_sample_value
    assert sample("mirrord_rate_limit_window_bound_bytes_per_second") == float("inf")
    far = PathSample(rtt=0.080, window=40_960, pinned=True)  # 16 x 40,960 B / 80 ms
    traffic.observe_path(far)
    traffic.observe_path(far)
    assert traffic.held_back() == (16 * 40_960 / 0.080, 12 << 20)
    (warning,) = logs.events("fetch.rate_limit.out_of_reach")
    assert (warning["rtt_ms"], warning["connections"], warning["most"]) == (80.0, 16, "8.2 MB/s")
    assert (warning["burst"], warning["burst_needed"]) == ("4MiB", "12MiB")  # 4 x 20 x 1.2 / 8.19
    assert sample("mirrord_origin_rtt_seconds") == 0.080
    assert sample("mirrord_rate_limit_window_bound_bytes_per_second") == 16 * 40_960 / 0.080

    traffic.observe_path(PathSample(rtt=0.002, window=40_960, pinned=True))  # near: 328 MB/s
    traffic.observe_path(PathSample(rtt=0.5, window=1 << 20, pinned=False))  # not limited
    assert len(logs.events("fetch.rate_limit.out_of_reach")) == 1
    assert sample("mirrord_origin_rtt_seconds") == 0.5
    assert sample("mirrord_rate_limit_window_bound_bytes_per_second") == 16 * 40_960 / 0.002
    assert traffic.held_back() is None and traffic.origin_rtt == 0.5

    traffic.set_override(10.0 * MB)  # another limit: said again if out of reach
    traffic.observe_path(far)
    assert [w["rate"] for w in logs.events("fetch.rate_limit.out_of_reach")] == [
        "20.0 MB/s",
        "10.0 MB/s",
    ]
    assert traffic.held_back() == (16 * 40_960 / 0.080, 6 << 20)
    traffic.set_override(None)
    assert sample("mirrord_rate_limit_window_bound_bytes_per_second") == float("inf")
    assert traffic.held_back() is None
    traffic.set_override(10.0 * MB)
    traffic.reconfigure(FetchConfig(rate_limit=10.0 * MB, burst=16 << 20))
    assert traffic.held_back() is None  # the windows seen were sized for the old burst
