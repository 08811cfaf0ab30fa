"""Downloads in fetch worker processes: same guarantees, one global rate limit, self-healing."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from mirrord.core.clock import FakeClock
from mirrord.core.config import FetchConfig
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import PackageSpec, simple_specs
from mirrord.fetch import workerpool
from mirrord.fetch.httpstatus import (
    MAX_RECEIVE_BUFFER,
    MIN_RECEIVE_BUFFER,
    limited_receive_buffer,
)
from mirrord.fetch.loopload import LOAD_WINDOW, LoopLoad
from mirrord.fetch.tcppath import PathSample
from mirrord.fetch.traffic import TrafficControl
from mirrord.fetch.workerpool import (
    AdaptiveDownloader,
    download_connections,
    tree_connections,
    worker_fetch,
)
from mirrord.sync.runtime import open_runtime
from tests.helpers import Mirror, check_published

KEY = ArchKey("v3.20", "main", "x86_64")
TARGET = PackageSpec("target", "2.0-r0", payload=300_000, seed=99)
PATH = f"{KEY}/{TARGET.filename}"


def world(mirror: Mirror) -> None:
    mirror.tree.put(KEY, [*simple_specs("other", 6, payload=4000), TARGET])


async def test_a_reset_mid_body_is_resumed_inside_a_worker(mirror: Mirror) -> None:
    world(mirror)
    mirror.origin.add_fault(PATH, Fault.reset(after=150_000))
    config = mirror.config(KEY, fetch={"processes": 2, "processes_from": 0})
    metrics = Metrics()
    (result,) = await mirror.sync(config, metrics=metrics)
    assert result.outcome == "published", result.error
    first, second = (dict(r.headers) for r in mirror.origin.requests_for(PATH))
    assert "Range" not in first and second["Range"] == "bytes=150000-"
    retries = metrics.registry.get_sample_value(
        "mirrord_fetch_retries_total", {"reason": "network"}
    )
    assert retries == 1  # the worker's events reach the daemon's metrics
    assert check_published(config).ok


async def test_workers_run_the_daemons_code_not_a_mirrord_in_the_working_directory(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "another-checkout"
    decoy = elsewhere / "mirrord" / "fetch"
    decoy.mkdir(parents=True)
    for package in (decoy.parent, decoy):
        (package / "__init__.py").write_text("")
    ran = tmp_path / "the decoy ran"
    (decoy / "worker.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    monkeypatch.chdir(elsewhere)
    world(mirror)
    config = mirror.config(KEY, fetch={"processes": 2, "processes_from": 0})
    (result,) = await mirror.sync(config)
    assert result.outcome == "published", result.error
    assert not ran.exists()
    assert check_published(config).ok


async def test_worker_failures_come_back_as_the_same_errors(mirror: Mirror) -> None:
    world(mirror)
    mirror.origin.add_fault(PATH, Fault.corrupt(), Fault.corrupt())
    config = mirror.config(KEY, fetch={"processes": 2, "processes_from": 0})
    (result,) = await mirror.sync(config)
    assert result.outcome == "failed" and result.error is not None
    assert (
        f"{TARGET.filename}: checksum (C:) mismatch" in result.error or "datahash" in result.error
    )
    assert len(mirror.origin.requests_for(PATH)) == 2
    assert not config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz").exists()
    # Logged in the workers, written by the daemon's logger with the worker's pid.
    logged = mirror.logs.events("fetch.package.verify_failed")
    assert [(r["package"], r["attempt"], r["level"]) for r in logged] == [
        (TARGET.filename, 1, "warning"),
        (TARGET.filename, 2, "warning"),
    ]
    assert all(type(r["worker"]) is int and r["worker"] != os.getpid() for r in logged)

    mirror.origin.add_fault(PATH, Fault.http(404))
    (result,) = await mirror.sync(config)
    assert (
        result.error is not None and "HTTP 404" in result.error and TARGET.filename in result.error
    )


async def test_the_rate_limit_stays_global_across_worker_processes(mirror: Mirror) -> None:
    world(mirror)
    total = sum(len(p.data) for p in mirror.tree.packages(KEY))
    # High enough not to slow the test: what matters is that every byte was granted.
    config = mirror.config(
        KEY, fetch={"processes": 2, "processes_from": 0, "rate_limit": "1GB/s", "burst": "64KiB"}
    )
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        (result,) = await runtime.engine.run_pass()
        passed = runtime.traffic.bucket.passed
        measured = runtime.traffic.meter.bytes
    assert result.outcome == "published"
    assert passed >= total
    assert measured == total


async def test_a_killed_worker_fails_its_jobs_and_is_restarted(mirror: Mirror) -> None:
    world(mirror)
    mirror.origin.add_fault(PATH, Fault.stall(after=1000))
    config = mirror.config(KEY, fetch={"processes": 1, "processes_from": 0})
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        downloader = adaptive.pool

        async def kill_when_stalled() -> None:
            await mirror.origin.stalled.wait()
            pid = downloader.worker_pids()[0]
            os.kill(pid, signal.SIGKILL)

        async with asyncio.TaskGroup() as group:
            group.create_task(kill_when_stalled())
            (failed,) = await runtime.engine.run_pass()
        assert failed.outcome == "failed"
        assert failed.error is not None and "fetch worker process died" in failed.error
        mirror.origin.release_stalls.set()
        (healed,) = await runtime.engine.run_pass()
        assert healed.outcome == "published", healed.error
        assert mirror.logs.events("fetch.worker.exited")
    assert check_published(config).ok


async def test_worker_processes_start_only_for_a_big_backlog(mirror: Mirror) -> None:
    few = simple_specs("few", 10)
    mirror.tree.put(KEY, few[:5])
    fetch = {"processes": 2, "processes_from": 50, "processes_busy": 0, "concurrency": 4}
    assert [r.outcome for r in await mirror.sync(mirror.config(KEY, fetch={"processes": 0}))] == [
        "published"
    ]
    mirror.tree.put(KEY, few)
    config = mirror.config(KEY, fetch=fetch)
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        (small,) = await runtime.engine.run_pass()  # an incremental pass: 5 packages
        assert small.outcome == "published" and not adaptive.pool.ready
        assert adaptive.pool.worker_pids() == []
        mirror.tree.put(KEY, [*few, *simple_specs("many", 200, payload=1000)])
        (big,) = await runtime.engine.run_pass()
        assert big.outcome == "published"
        assert len(adaptive.pool.worker_pids()) == 2  # started; jobs go there once one is up
    assert check_published(config).files == 210


async def test_a_first_sync_starts_the_workers_as_the_runtime_opens(mirror: Mirror) -> None:
    """Nothing published yet, the loop's load not judged: the whole index is the
    backlog, so the workers' imports overlap the index's fetch and verification
    instead of following them."""
    mirror.tree.put(KEY, simple_specs("a", 3))
    config = mirror.config(KEY, fetch={"processes": 2, "processes_from": 50, "processes_busy": 0})
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        await adaptive.pool.wait_up()  # before any pass asked for a download
        assert len(adaptive.pool.worker_pids()) == 2
        (first,) = await runtime.engine.run_pass()
        assert first.outcome == "published" and first.fetched == 3
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:  # published now
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        (again,) = await runtime.engine.run_pass()
        assert again.outcome == "unchanged" and adaptive.pool.worker_pids() == []


async def test_only_the_arches_a_run_syncs_start_the_workers_at_once(mirror: Mirror) -> None:
    """``sync --only`` of a published arch: another arch never published stays out of it."""
    fresh = ArchKey("v3.20", "community", "x86_64")
    mirror.tree.put(KEY, simple_specs("a", 3))
    mirror.tree.put(fresh, simple_specs("b", 3))
    fetch = {"processes": 2, "processes_from": 50, "processes_busy": 0}
    assert [r.outcome for r in await mirror.sync(mirror.config(KEY, fetch=fetch))] == ["published"]
    config = mirror.config(KEY, fresh, fetch=fetch)
    async with open_runtime(config, log=mirror.logs.logger(), targets=[KEY]) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        (again,) = await runtime.engine.run_pass([KEY])
        assert again.outcome == "unchanged" and adaptive.pool.worker_pids() == []
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:  # every arch
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        await adaptive.pool.wait_up()
        assert len(adaptive.pool.worker_pids()) == 2


class LoopCPU:
    """The loop thread's CPU clock beside a FakeClock: each reading lets a window of
    wall time pass, all of it spent by the loop or none of it."""

    def __init__(self, clock: FakeClock, *, busy: bool) -> None:
        self.clock = clock
        self.busy = busy
        self.used = 0.0

    def __call__(self) -> float:
        self.clock.advance(LOAD_WINDOW)
        self.used += LOAD_WINDOW if self.busy else 0.0
        return self.used


@pytest.mark.parametrize("loop_busy", [False, True])
async def test_a_big_backlog_goes_to_the_workers_only_while_the_loop_is_saturated(
    mirror: Mirror, loop_busy: bool
) -> None:
    """From an origin whose link sets the pace, the loop mostly waits: workers would
    add their start-up and messages for nothing, a first sync's too. Only a loop
    that is what holds the downloads back starts them."""
    mirror.tree.put(KEY, simple_specs("many", 120, payload=1000))
    config = mirror.config(KEY, fetch={"processes": 2, "processes_from": 50, "concurrency": 4})
    assert config.fetch.processes_busy == 0.9  # the default judges the loop
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        clock = FakeClock()
        adaptive.load = LoopLoad(clock, LoopCPU(clock, busy=loop_busy))
        assert adaptive.pool.worker_pids() == []  # a first sync, and not started at once
        (first,) = await runtime.engine.run_pass()
        assert (first.outcome, first.fetched) == ("published", 120)
        started = mirror.logs.events("fetch.workers.start")
        if loop_busy:
            assert len(adaptive.pool.worker_pids()) == 2
            assert [(e["loop_busy"], e["backlog"] >= 50) for e in started] == [(1.0, True)]
        else:
            assert adaptive.pool.worker_pids() == [] and started == []
    assert check_published(config).files == 120


async def test_with_idle_workers_the_loops_load_is_not_judged(mirror: Mirror) -> None:
    """Workers under SCHED_IDLE spend only CPU nothing else wants, and take the sync
    off the daemon's Nice=10, which is what keeps a web server's latency beside it:
    a first sync starts them as the runtime opens, as with processes_busy 0."""
    mirror.tree.put(KEY, simple_specs("a", 3))
    fetch = {"processes": 2, "processes_from": 50, "worker_cpu": "idle"}
    config = mirror.config(KEY, fetch=fetch)
    assert config.fetch.processes_busy == 0.9
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader) and adaptive.load is None
        await adaptive.pool.wait_up()  # before any pass asked for a download
        assert len(adaptive.pool.worker_pids()) == 2


# Imported by every Python process started with this directory on PYTHONPATH, before
# anything else: the fetch worker stops itself before its first import of mirrord.
STOP_AT_START = "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n"


async def test_workers_tell_the_daemon_each_new_connections_round_trip_and_window(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a limit the daemon judges whether the windows hold the downloads back:
    the workers' connections, which carry a big sync's downloads, are heard too."""
    world(mirror)
    config = mirror.config(
        KEY, fetch={"processes": 2, "processes_from": 0, "rate_limit": "1GB/s", "burst": "16MiB"}
    )
    heard: list[PathSample] = []
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        # The daemon's own pools hold the bound method already: this hears the workers.
        monkeypatch.setattr(runtime.traffic, "observe_path", heard.append)
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        (first,) = await runtime.engine.run_pass()
        await adaptive.pool.wait_up()
        mirror.tree.put(
            KEY, [*simple_specs("other", 6, payload=4000), TARGET, *simple_specs("b", 8)]
        )
        (second,) = await runtime.engine.run_pass()
    assert (first.outcome, second.outcome, second.fetched) == ("published", "published", 8)
    assert heard and all(sample.pinned and 0 < sample.rtt < 0.01 for sample in heard)
    # Each connection of the tree pins the same buffer, workers' too (the kernel doubles it,
    # and on loopback advertises nearly all of that as the window)
    buffer = limited_receive_buffer(1e9, 16 << 20, tree_connections(config.fetch))
    assert buffer is not None and buffer > MIN_RECEIVE_BUFFER
    assert all(buffer < sample.window <= 2 * buffer for sample in heard), heard


async def test_jobs_stay_on_the_daemon_until_a_worker_says_ready_then_its_connections_close(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers spend a few hundred ms importing: until one is up, the daemon downloads.
    Then its own download connections (and their read buffers) would only sit idle."""
    mirror.tree.put(KEY, simple_specs("a", 20, payload=2000))
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(STOP_AT_START)
    monkeypatch.setenv("PYTHONPATH", str(hold))
    fetch = {"processes": 2, "processes_from": 1, "processes_busy": 0, "concurrency": 4}
    config = mirror.config(KEY, fetch=fetch)
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        try:
            async with asyncio.timeout(60):  # a job sent to a stopped worker never ends
                (result,) = await runtime.engine.run_pass()  # the workers stay stopped
                await adaptive.pool.wait_started()  # the second may start after the pass
            assert result.outcome == "published" and result.fetched == 20
            pids = adaptive.pool.worker_pids()
            assert len(pids) == 2 and not adaptive.pool.ready
            assert adaptive.local.idle_buffer_bytes() > 0  # keep-alive while it downloads
        finally:
            for pid in adaptive.pool.worker_pids():
                os.kill(pid, signal.SIGCONT)
        await adaptive.pool.wait_up()
        assert adaptive.pool.ready
        mirror.tree.put(KEY, [*simple_specs("a", 20, payload=2000), *simple_specs("b", 10)])
        (handed,) = await runtime.engine.run_pass()
        assert handed.outcome == "published" and handed.fetched == 10
        assert adaptive.local.idle_buffer_bytes() == 0
    assert check_published(config).files == 30


async def test_a_worker_that_does_not_exit_is_killed_and_the_stop_goes_on(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wedged worker (here stopped before its first import) must not hang the daemon's stop."""
    mirror.tree.put(KEY, simple_specs("a", 2))
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(STOP_AT_START)
    monkeypatch.setenv("PYTHONPATH", str(hold))
    monkeypatch.setattr(workerpool, "EXIT_WAIT", 0.2)
    config = mirror.config(KEY, fetch={"processes": 2, "processes_from": 0})
    async with asyncio.timeout(60):
        async with open_runtime(config, log=mirror.logs.logger()) as runtime:
            adaptive = runtime.fetcher.downloader
            assert isinstance(adaptive, AdaptiveDownloader)
            await adaptive.pool.wait_started()
            pids = adaptive.pool.worker_pids()
            assert len(pids) == 2
    for pid in pids:  # killed and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    killed = mirror.logs.events("fetch.worker.killed")
    assert sorted(event["index"] for event in killed) == [0, 1]


@pytest.mark.parametrize(("worker_cpu", "policy"), [("idle", os.SCHED_IDLE), ("normal", 0)])
async def test_worker_cpu_sets_the_scheduling_policy_of_every_worker_thread(
    mirror: Mirror, worker_cpu: str, policy: int
) -> None:
    world(mirror)
    mirror.origin.add_fault(PATH, Fault.stall(after=1000))
    fetch = {"processes": 1, "processes_from": 0, "worker_cpu": worker_cpu}
    config = mirror.config(KEY, fetch=fetch)
    assert config.fetch.worker_cpu == worker_cpu
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        seen: dict[int, int] = {}

        async def look_while_stalled() -> None:
            await mirror.origin.stalled.wait()
            (pid,) = adaptive.pool.worker_pids()
            for task in os.listdir(f"/proc/{pid}/task"):
                seen[int(task)] = os.sched_getscheduler(int(task))
            mirror.origin.release_stalls.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(look_while_stalled())
            (result,) = await runtime.engine.run_pass()
        assert result.outcome == "published", result.error
    assert seen and set(seen.values()) == {policy}, seen
    assert os.sched_getscheduler(0) == 0  # the daemon itself keeps the normal policy
    assert check_published(config).ok


async def test_a_stop_while_the_workers_are_being_started_stops_them_too(mirror: Mirror) -> None:
    """A stop that comes while the processes are being spawned: the ones not yet
    registered when the pool closed are closed as they register, and the stop ends."""
    world(mirror)
    config = mirror.config(KEY, fetch={"processes": 2})
    async with asyncio.timeout(30):  # it hung: each worker's socket stayed open
        async with open_runtime(config, log=mirror.logs.logger()) as runtime:
            adaptive = runtime.fetcher.downloader
            assert isinstance(adaptive, AdaptiveDownloader)
            adaptive.pool.start()
        pids = adaptive.pool.worker_pids()
    assert pids == [] and mirror.logs.events("fetch.worker.killed") == []


async def test_until_the_workers_are_wanted_the_daemons_connections_share_the_budget(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most syncs never start the workers: until they are wanted, the burst's half is
    the daemon's connections' alone, windows twice as wide as the tree's share (a far
    origin's limited sync carries twice as much); once they are, the tree's."""
    world(mirror)
    config = mirror.config(KEY, fetch={"processes": 2, "rate_limit": "1GB/s", "burst": "16MiB"})
    heard: list[PathSample] = []
    monkeypatch.setattr(TrafficControl, "observe_path", lambda _, sample: heard.append(sample))
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        adaptive = runtime.fetcher.downloader
        assert isinstance(adaptive, AdaptiveDownloader)
        (first,) = await runtime.engine.run_pass()  # 7 packages: under processes_from
        assert first.outcome == "published" and not adaptive.pool.wanted
        assert download_connections(config.fetch, adaptive.pool) == config.fetch.connections
        adaptive.pool.start()
        tree = download_connections(config.fetch, adaptive.pool)
        assert tree == tree_connections(config.fetch) > config.fetch.connections
        await adaptive.pool.wait_up()
    own = limited_receive_buffer(1e9, 16 << 20, config.fetch.connections)
    assert own is not None and 2 * own <= MAX_RECEIVE_BUFFER
    downloads = [sample for sample in heard if sample.pinned]  # polls keep their own
    assert downloads and all(own < sample.window <= 2 * own for sample in downloads), heard


@pytest.mark.parametrize(
    ("concurrency", "per_host", "processes", "total"),
    [(64, 16, 0, 16), (64, 16, 2, 32), (64, 16, 3, 34), (8, 16, 2, 16), (64, 1, 4, 5)],
)
def test_receive_buffers_are_shared_by_every_connection_the_process_tree_may_hold(
    concurrency: int, per_host: int, processes: int, total: int
) -> None:
    """The daemon's connections and the workers' are open together while the workers
    take over: the burst's half is divided among all of them, not one process's."""
    fetch = FetchConfig(
        concurrency=concurrency, per_host=per_host, processes=processes, rate_limit=20e6
    )
    assert tree_connections(fetch) == total
    workers = [worker_fetch(fetch).connections] * processes if processes else []
    assert fetch.connections + sum(workers) == total
    buffer = limited_receive_buffer(fetch.rate_limit, fetch.burst, total)
    assert buffer is not None and 2 * buffer * total <= fetch.burst // 2  # the kernel doubles it
