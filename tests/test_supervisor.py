"""Background work with an error boundary: a broken store fails a job, never the daemon."""

from __future__ import annotations

import asyncio

from mirrord.core.clock import FakeClock
from mirrord.core.errors import StoreError
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.shell.supervisor import Supervisor
from mirrord.storage.store import ContentStore
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import LogCapture, Mirror, check_published, package_key_of, stored_objects

KEY = ArchKey("v3.20", "main", "x86_64")


async def test_an_unreadable_object_is_damage_for_verify_not_a_dead_daemon(mirror: Mirror) -> None:
    specs = simple_specs("a", 4)
    mirror.tree.put(KEY, specs)
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        store = ContentStore(daemon.config.storage.path)
        victim = package_key_of(mirror.tree.built(specs[1]).data)
        path = store.object_path(victim)
        path.unlink()
        path.mkdir()  # reading it fails with EISDIR, as a dying disk fails with EIO

        assert daemon.operations is not None
        await ctl(daemon, "verify")
        await daemon.operations.scrub.ended.wait()
        status = await ctl(daemon, "status")
        assert status["verify"]["damaged"] == 1 and status["verify"]["missing"] == 0
        assert status["background"] == {"failures": {}, "last_failure": None}
        (bad,) = mirror.logs.events("maintenance.scrub.bad_object")
        assert bad["sha256"] == victim and bad["actual"] == "unreadable: Is a directory"

        await ctl(daemon, "verify", repair=True)  # the directory goes, the package comes again
        await synced(daemon, 2)
        assert path.is_file() and package_key_of(path.read_bytes()) == victim
        assert check_published(daemon.config).ok


async def test_a_failed_collection_is_counted_and_shown_and_the_daemon_serves_on(
    mirror: Mirror,
) -> None:
    """On a clock that moves only when the test says: a collection runs when the test
    advances it, never between the second sync and the victim's directory turning into a
    file (a collection there could remove every old object first, leaving none to fail on)."""
    first = simple_specs("a", 5)
    mirror.tree.put(KEY, first)
    config = daemon_config(
        mirror, KEY, publish={"keep_snapshots": 1, "grace": 0}, storage={"gc_interval": 60}
    )
    clock = FakeClock()
    async with running_daemon(mirror, config, clock=clock) as daemon:

        async def collect() -> None:
            async with daemon.collected:
                seen = daemon.collections
                clock.advance(60)
                await daemon.collected.wait_for(lambda: daemon.collections > seen)

        await synced(daemon, 1)
        storage = daemon.config.storage.path
        old = {package_key_of(mirror.tree.built(s).data) for s in first}
        mirror.tree.put(KEY, [s.bumped() for s in first])
        await ctl(daemon, "sync")
        await synced(daemon, 2)
        assert old <= set(stored_objects(storage))  # garbage now, not yet collected
        # Its fan-out directory turns into a file, so removing it fails.
        fan_out = ContentStore(storage).object_path(min(old)).parent
        aside = fan_out.with_name(fan_out.name + ".aside")
        fan_out.rename(aside)
        fan_out.write_bytes(b"not a directory\n")
        await collect()
        status = await ctl(daemon, "status")
        fan_out.unlink()
        aside.rename(fan_out)
        failures = status["background"]["failures"]
        assert failures == {"gc": 1}
        last = status["background"]["last_failure"]
        assert last["task"] == "gc" and "cannot remove a stored object" in last["error"]
        counted = daemon.metrics.background_failures.labels(task="gc")._value.get()
        assert counted == 1
        human = (await human_ctl(daemon, "status")).splitlines()
        (line,) = [row for row in human if row.lstrip().startswith("background:")]
        assert "failed (gc 1); last: gc " in line

        await collect()  # the disk is back: the next collection finishes the job
        assert not old & set(stored_objects(storage))
        mirror.tree.put(KEY, [s.bumped().bumped() for s in first])
        await ctl(daemon, "sync")
        await synced(daemon, 3)  # still syncing and publishing
        assert check_published(daemon.config).ok


async def test_a_broken_published_index_fails_its_arch_with_a_clear_error(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 3))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        index = daemon.config.publish.path / str(KEY) / "APKINDEX.tar.gz"
        index.unlink()
        index.mkdir()  # reading it fails (EISDIR), as a dying disk fails with EIO
        await ctl(daemon, "sync")
        await synced(daemon, 2)
        (arch,) = (await ctl(daemon, "status"))["arches"]
        assert arch["last_outcome"] == "failed"
        assert arch["last_error"].startswith("cannot write the published tree: Is a directory")
        index.rmdir()  # the disk is replaced: the next sync publishes again
        await ctl(daemon, "sync")
        await synced(daemon, 3)
        assert check_published(daemon.config).ok


async def test_a_failed_service_is_counted_and_started_again_after_a_pause() -> None:
    clock = FakeClock()
    logs = LogCapture()
    supervisor = Supervisor(Metrics(), logs.logger(), clock)
    runs: list[int] = []
    started = [asyncio.Event() for _ in range(3)]

    async def service() -> None:
        runs.append(len(runs) + 1)
        started[len(runs) - 1].set()
        if len(runs) == 1:
            raise StoreError("/srv/x", "disk gone")
        if len(runs) == 2:
            raise RuntimeError("a bug")
        await asyncio.Event().wait()  # serves until cancelled

    async with asyncio.timeout(10):  # a service not started again fails, not hangs
        async with asyncio.TaskGroup() as group:
            task = group.create_task(supervisor.keep_running("report", service, restart_after=30))
            for run in (0, 1):  # a failed run, then 30 s on the clock before the next start
                await started[run].wait()  # it failed in the same step: its pause has begun
                assert (
                    clock.sleepers == 1 and clock.slept[-1] == 30 and not started[run + 1].is_set()
                )
                clock.advance(30)
            await started[2].wait()
            task.cancel()
    assert runs == [1, 2, 3]
    assert supervisor.failures == {"report": 2}
    assert supervisor.metrics.background_failures.labels(task="report")._value.get() == 2
    assert (
        supervisor.last is not None
        and supervisor.last.error == "internal error: RuntimeError('a bug')"
    )
    failed = logs.events("daemon.task.failed")
    assert [e.get("error") for e in failed] == ["/srv/x: disk gone", None]  # a bug: traceback
    assert "exception" in failed[1]
    assert len(logs.events("daemon.task.restarting")) == 2
