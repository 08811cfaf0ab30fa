"""The admin control socket, spoken to over a real Unix socket, against the real daemon."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mirrord import __version__
from mirrord.core.errors import ControlError
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from mirrord.shell.control.protocol import MAX_LINE, request_line
from mirrord.storage.store import ContentStore
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import (
    REPO_ROOT,
    Mirror,
    check_published,
    package_key_of,
    spawn_mirrord,
    store_totals,
    stored_objects,
)

KEY = ArchKey("v3.20", "main", "x86_64")
OTHER = ArchKey("v3.20", "community", "x86_64")


async def raw_exchange(path: str, payload: bytes, *, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    writer.write(payload)  # no drain: a huge payload may still be going out as we read
    data = await asyncio.wait_for(reader.readline(), 10) if read else b""
    writer.close()
    return data


async def test_status_over_the_socket_and_through_ctl(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 8))
    mirror.tree.put(OTHER, simple_specs("b", 3))
    async with running_daemon(mirror, daemon_config(mirror, KEY, OTHER)) as daemon:
        await synced(daemon, 1)
        status = await ctl(daemon, "status")
        assert status["paused"] is False and status["sync"]["syncing"] == []
        arches = {a["arch"]: a for a in status["arches"]}
        assert arches[str(KEY)]["packages"] == 8 and arches[str(OTHER)]["packages"] == 3
        assert arches[str(KEY)]["last_outcome"] == "published" and arches[str(KEY)]["lag"] == 0
        assert status["store"]["objects"] == 11 + 2

        socket = str(daemon.config.control.socket)
        assert stat.S_IMODE(os.stat(socket).st_mode) == 0o660
        human = (await human_ctl(daemon, "status")).splitlines()
        assert human[0] == f"mirrord {__version__} (pid {os.getpid()}): running"
        assert human[2] == "   syncing: none; each arch polls every 1h00m"
        assert human[5].startswith("     store: 13 objects, ")
        assert human[6] == "    verify: never run since the daemon started"
        snapshot = arches[str(KEY)]["snapshot"]
        rows = [line for line in human if line.startswith(f"{KEY} ")]
        assert len(rows) == 1
        row = rf"{KEY} +idle +{snapshot} +8  \S+ ago +- +in (?:59m\d\ds|1h00m) +published"
        assert re.fullmatch(row, rows[0]), rows[0]
        assert "None" not in "\n".join(human)

        listing = (await human_ctl(daemon, "snapshots", str(KEY))).splitlines()
        assert listing[:2] == [
            f"snapshots of {KEY} (ids count across all arches; roll back with "
            f"'mirrord ctl rollback {KEY} ID'):",
            "ID  CREATED (UTC)        STATUS     PACKAGES     SIZE  INDEX         NOTE",
        ]
        row = (
            rf" *{snapshot}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  published +8 +[\d.]+ KB"
            rf"  [0-9a-f]{{12}}  published now; {KEY} generated"
        )
        assert re.fullmatch(row, listing[2]), listing[2]
        as_json = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "mirrord.shell.cli",
                "ctl",
                "--socket",
                socket,
                "--json",
                "snapshots",
                str(KEY),
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=False,
        )
        assert json.loads(as_json.stdout)["snapshots"][0]["current"] is True
        # Flags where people type them: after the command too.
        typed_after = await asyncio.to_thread(
            subprocess.run,
            [
                *(sys.executable, "-m", "mirrord.shell.cli"),
                "ctl",
                "status",
                "--json",
                "--socket",
                socket,
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=False,
        )
        assert typed_after.returncode == 0, typed_after.stderr
        assert {a["arch"] for a in json.loads(typed_after.stdout)["arches"]} == {
            str(KEY),
            str(OTHER),
        }


async def spawn_watch(socket: str, *, stdout: int) -> asyncio.subprocess.Process:
    """``mirrord ctl status --watch --every 0.1``, its stderr piped."""
    return await spawn_mirrord(
        "ctl",
        "status",
        "--watch",
        "--every",
        "0.1",
        "--socket",
        socket,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
async def test_ctl_status_watch_refreshes_until_ctrl_c(
    mirror: Mirror, inherited: signal.Handlers
) -> None:
    """Also when started with SIGINT ignored, as a script's background job is (and as
    this suite was, when run as one): the watch refreshed forever."""
    mirror.tree.put(KEY, simple_specs("a", 2))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        socket = str(daemon.config.control.socket)
        ours = signal.signal(signal.SIGINT, inherited)  # what the child starts with
        try:
            watch = await spawn_watch(socket, stdout=asyncio.subprocess.PIPE)
        finally:
            signal.signal(signal.SIGINT, ours)
        assert watch.stdout is not None and watch.stderr is not None
        frames: list[list[str]] = [[]]
        async with asyncio.timeout(60):  # a loaded machine starts a process slowly
            while len(frames) < 3:  # two whole frames
                line = (await watch.stdout.readline()).decode()
                assert line, "ctl status --watch ended by itself"
                if line.startswith("(every 0.1s; Ctrl-C to stop)"):
                    frames.append([])
                else:
                    frames[-1].append(line.rstrip("\n"))
        watch.send_signal(signal.SIGINT)
        frames_since = 0
        try:
            async with asyncio.timeout(60):
                async for printed in watch.stdout:  # drained: a full pipe would block its exit
                    frames_since += printed.startswith(b"(every 0.1s")
                errors = await watch.stderr.read()
                assert await watch.wait() == 0, errors
        except TimeoutError:  # say what it was doing
            signals = [
                line.strip()
                for line in Path(f"/proc/{watch.pid}/status").read_text().splitlines()
                if line.startswith(("SigBlk", "SigIgn", "SigCgt"))
            ]
            watch.kill()
            errors = await watch.stderr.read()
            pytest.fail(
                f"ctl status --watch still running 60 s after Ctrl-C, {frames_since} frames "
                f"printed since; its signals {signals}, the test's SIGINT handler "
                f"{signal.getsignal(signal.SIGINT)!r}; stderr {errors[-2000:]!r}"
            )
        for frame in frames[:2]:
            assert frame[0].startswith("mirrord ") and any(
                row.startswith(f"{KEY} ") for row in frame
            )


async def test_ctl_status_watch_into_a_reader_that_went_away_ends_quietly(mirror: Mirror) -> None:
    """``ctl status --watch | head``: once head exits, the watch ends with 0 and no traceback."""
    mirror.tree.put(KEY, simple_specs("a", 2))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        read_end, write_end = os.pipe()
        try:
            watch = await spawn_watch(str(daemon.config.control.socket), stdout=write_end)
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:  # what head reads, then it exits
            first = await asyncio.to_thread(reader.readline)
        assert first.startswith(b"mirrord ")
        assert watch.stderr is not None
        async with asyncio.timeout(60):
            errors = await watch.stderr.read()
            assert await watch.wait() == 0, errors
        assert errors == b""


async def test_bad_clients_get_errors_and_everyone_else_is_served(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 3))
    config = daemon_config(mirror, KEY)
    async with running_daemon(mirror, config) as daemon:
        await synced(daemon, 1)
        path = str(daemon.config.control.socket)

        # A client that connects and says nothing holds no one up.
        silent_reader, silent_writer = await asyncio.open_unix_connection(path)

        not_json = json.loads(await raw_exchange(path, b"hello there\n"))
        assert not_json["ok"] is False and not_json["error"]["code"] == "bad_request"
        unknown = json.loads(await raw_exchange(path, request_line("launch-missiles")))
        assert unknown["error"]["code"] == "unknown_command"
        future = json.loads(await raw_exchange(path, b'{"v": 9, "cmd": "status"}\n'))
        assert future["error"]["code"] == "unsupported_version"
        bad_arg = json.loads(await raw_exchange(path, request_line("snapshots", {"arch": "../x"})))
        assert bad_arg["error"]["code"] == "bad_request"
        not_ours = json.loads(
            await raw_exchange(path, request_line("snapshots", {"arch": "a/b/c"}))
        )
        assert not_ours["error"]["code"] == "not_found"

        huge = json.loads(await raw_exchange(path, b"x" * (10 * 1024 * 1024) + b"\n"))
        assert huge["error"]["code"] == "too_large" and str(MAX_LINE) in huge["error"]["message"]

        # Several requests on one connection, after an error.
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"{broken\n" + request_line("status", request_id=7))
        await writer.drain()
        first = json.loads(await reader.readline())
        second = json.loads(await reader.readline())
        assert first["ok"] is False and second["ok"] is True and second["id"] == 7
        writer.close()

        # A client that asks and leaves before the answer.
        for _ in range(5):
            await raw_exchange(path, request_line("status"), read=False)

        assert (await ctl(daemon, "status"))["arches"][0]["syncs"] >= 1
        silent_writer.close()
        del silent_reader


async def test_a_client_that_says_nothing_is_dropped_after_the_idle_timeout(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 2))
    config = daemon_config(mirror, KEY, control={"idle_timeout": 0.2})
    async with running_daemon(mirror, config) as daemon:
        reader, writer = await asyncio.open_unix_connection(str(daemon.config.control.socket))
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the daemon
        writer.close()


async def test_peer_credentials_decide_who_may_steer(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 2))
    public = Path(tempfile.mkdtemp(prefix="mirrord-ctl-"))  # reachable by another uid
    public.chmod(0o755)
    socket_path = str(public / "control.sock")
    config = daemon_config(mirror, KEY, control={"group": "nogroup", "socket": socket_path})
    try:
        await _check_peers(mirror, config)
    finally:
        shutil.rmtree(public)


async def _check_peers(mirror: Mirror, config: Path) -> None:
    async with running_daemon(mirror, config) as daemon:
        path = str(daemon.config.control.socket)
        os.chmod(path, 0o666)  # let anyone connect, so SO_PEERCRED is what decides
        script = (
            "import os, socket, sys\n"
            "os.setgroups([int(g) for g in sys.argv[3:]]); os.setgid(int(sys.argv[2]))\n"
            "os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "try:\n"
            '    s.sendall(b\'{"v":1,"cmd":"status"}\\n\')\n'
            "except BrokenPipeError:\n"  # refused before it finished asking: the reply is there
            "    pass\n"
            "print(s.makefile().readline())\n"
        )

        def as_nobody(gid: int, *groups: int) -> dict[str, object]:
            # The system interpreter: the venv's lives under /root, out of nobody's reach.
            out = subprocess.run(
                ["/usr/bin/python3", "-c", script, path, str(gid), *map(str, groups)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert out.returncode == 0, out.stderr
            return dict(json.loads(out.stdout))

        stranger = await asyncio.to_thread(as_nobody, 65533)
        assert stranger["ok"] is False and stranger["error"]["code"] == "forbidden"  # type: ignore[index]
        member = await asyncio.to_thread(as_nobody, 65534)  # nogroup: control.group
        assert member["ok"] is True
        supplementary = await asyncio.to_thread(as_nobody, 65533, 65534)  # via SO_PEERGROUPS
        assert supplementary["ok"] is True


async def test_pause_resume_rate_and_sync(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 3))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        assert await ctl(daemon, "pause") == {"paused": True}
        assert daemon.runtime is not None and daemon.runtime.fetcher.paused
        assert (await ctl(daemon, "sync"))["arches"] == {str(KEY): "paused"}
        status = await ctl(daemon, "status")
        assert status["arches"][0]["syncs"] == 1 and status["arches"][0]["state"] == "paused"
        await ctl(daemon, "resume")
        await synced(daemon, 2)

        assert (await ctl(daemon, "rate", value="20MB/s"))["limit"] == 20_000_000
        assert daemon.runtime.traffic.bucket.rate == 20_000_000
        assert await human_ctl(daemon, "rate") == (
            "rate limit: 20.0 MB/s "
            "(override, kept across restarts until 'mirrord ctl rate schedule')\n"
        )
        assert (await ctl(daemon, "rate", value="unlimited"))["limit"] is None
        assert (await ctl(daemon, "rate", value="schedule"))["source"] == "config"
        assert await human_ctl(daemon, "rate") == "rate limit: unlimited (from the configuration)\n"
        with pytest.raises(ControlError, match="rate"):
            await ctl(daemon, "rate", value="fast")

        mirror.tree.put(KEY, simple_specs("a", 5))
        answer = await ctl(daemon, "sync", arches=[str(KEY)])
        assert answer["queued"] == [str(KEY)] and answer["arches"] == {str(KEY): "started"}
        await synced(daemon, 3)
        assert check_published(daemon.config).files == 5


async def test_a_rate_override_survives_a_restart_until_returned_to_the_schedule(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 2))
    config = daemon_config(mirror, KEY, fetch={"rate_limit": "50MB/s"})
    async with running_daemon(mirror, config) as daemon:
        answer = await ctl(daemon, "rate", value="2MB/s")
        assert answer["source"] == "override" and answer["kept_across_restarts"] is True
    async with running_daemon(mirror, config) as daemon:  # the same storage, a new process
        assert daemon.runtime is not None and daemon.runtime.traffic.bucket.rate == 2_000_000
        rate = (await ctl(daemon, "status"))["rate"]
        assert rate["limit"] == 2_000_000 and rate["source"] == "override"
        assert mirror.logs.events("traffic.override.restored")[-1]["rate"] == "2.0 MB/s"
        await ctl(daemon, "rate", value="unlimited")  # an override too: no limit at all
    async with running_daemon(mirror, config) as daemon:
        assert daemon.runtime is not None and daemon.runtime.traffic.bucket.rate is None
        assert (await ctl(daemon, "rate", value="schedule"))["kept_across_restarts"] is False
    async with running_daemon(mirror, config) as daemon:
        assert daemon.runtime is not None and daemon.runtime.traffic.bucket.rate == 50_000_000
    # Each stop came while the first sync was planning: it ended at once, not at the grace.
    assert mirror.logs.events("daemon.stopped") and not mirror.logs.events(
        "daemon.stop.grace_expired"
    )


async def test_rollback_republishes_an_earlier_snapshot_and_holds_the_arch(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 10))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        index = daemon.config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz")
        first_index = index.read_bytes()
        first_mtime = index.stat().st_mtime
        mirror.tree.put(KEY, [s.bumped() for s in simple_specs("a", 10)][:9])
        await ctl(daemon, "sync")
        await synced(daemon, 2)
        assert index.read_bytes() != first_index

        listing = await ctl(daemon, "snapshots", arch=str(KEY))
        oldest = listing["snapshots"][-1]
        result = await ctl(daemon, "rollback", arch=str(KEY), snapshot=oldest["id"])
        assert result["held"] is True
        assert index.read_bytes() == first_index and index.stat().st_mtime == first_mtime
        assert check_published(daemon.config).files == 10

        # Held: polled at once for its lag, never published; "sync" of all skips it.
        assert daemon.scheduler is not None and daemon.runtime is not None
        status = daemon.runtime.book[KEY]
        await daemon.scheduler.wait_until(lambda: status.lag(time.time()) > 0)
        assert (await ctl(daemon, "sync"))["queued"] == []
        row = (await ctl(daemon, "status"))["arches"][0]
        assert row["state"] == "held" and row["held"] is True and row["lag"] > 0
        assert index.read_bytes() == first_index
        with pytest.raises(ControlError, match="no snapshot"):
            await ctl(daemon, "rollback", arch=str(KEY), snapshot=999)

        await ctl(daemon, "resume", arches=[str(KEY)])  # release: back to the origin's index
        await synced(daemon, 3)
        assert index.read_bytes() != first_index
        assert check_published(daemon.config).files == 9
        # The origin's index again is the snapshot it was, not a copy of it.
        listed = (await ctl(daemon, "snapshots", arch=str(KEY)))["snapshots"]
        assert len(listed) == 2 and len({s["index_sha256"] for s in listed}) == 2
        assert [s["current"] for s in listed] == [True, False]


async def test_publish_force_overrides_the_guard_once(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 20))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        mirror.tree.put(KEY, simple_specs("a", 4))
        await ctl(daemon, "sync")
        await synced(daemon, 2)
        status = await ctl(daemon, "status")
        assert status["arches"][0]["last_outcome"] == "refused"
        with pytest.raises(ControlError, match="force"):
            await ctl(daemon, "publish", arch=str(KEY))
        await ctl(daemon, "publish", arch=str(KEY), force=True)
        await synced(daemon, 3)
        assert check_published(daemon.config).files == 4


async def test_verify_repair_replaces_a_damaged_object_everywhere(mirror: Mirror) -> None:
    specs = simple_specs("a", 6, payload=5000)
    mirror.tree.put(KEY, specs)
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        store = ContentStore(daemon.config.storage.path)
        package = mirror.tree.built(specs[2]).data
        victim = package_key_of(package)  # a package, published as a hard link
        path = store.object_path(victim)
        os.chmod(path, 0o644)
        with open(path, "r+b") as handle:  # bit rot, in the store and the published link
            handle.seek(100)
            byte = handle.read(1)
            handle.seek(100)
            handle.write(bytes([byte[0] ^ 0xFF]))
        assert not check_published(daemon.config).ok  # the published link shares the inode

        started = await ctl(daemon, "verify", repair=True)
        assert started["running"] is True and started["repair"] is True
        await synced(daemon, 2)  # the repair asks for a pass
        status = await ctl(daemon, "status")
        assert status["verify"]["damaged"] == 1 and status["verify"]["repaired"] == 1
        (damage,) = mirror.logs.events("maintenance.scrub.damage")
        assert damage["sha256"] == victim and damage["arches"] == [str(KEY)]
        assert damage["files"] == [f"{KEY}/{specs[2].filename}"]
        assert daemon.metrics.damaged_objects.labels(kind="damaged")._value.get() == 1
        human = (await human_ctl(daemon, "status")).splitlines()
        total = status["verify"]["total"]
        verify = [line for line in human if line.startswith("    verify: done ")]
        assert verify[0].endswith(f" ago, {total} of {total} objects, 1 damaged, 1 repaired")
        assert check_published(daemon.config).ok
        assert victim in stored_objects(daemon.config.storage.path)


async def test_only_one_verify_runs_at_a_time(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 2))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        assert daemon.operations is not None
        daemon.operations.scrub.running = True  # as if a long scrub were under way
        with pytest.raises(ControlError, match="already running"):
            await ctl(daemon, "verify")
        daemon.operations.scrub.running = False
        assert (await ctl(daemon, "verify"))["running"] is True


async def test_gc_deletes_what_no_remembered_snapshot_needs(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 5))
    config = daemon_config(mirror, KEY, publish={"keep_snapshots": 1, "grace": 0})
    async with running_daemon(mirror, config) as daemon:
        await synced(daemon, 1)
        before = set(stored_objects(daemon.config.storage.path))
        mirror.tree.put(KEY, [s.bumped() for s in simple_specs("a", 5)])
        await ctl(daemon, "sync")
        await synced(daemon, 2)
        result = await ctl(daemon, "gc")
        after = set(stored_objects(daemon.config.storage.path))
        assert result["deleted_objects"] == 6  # five old packages and the old index
        assert result["kept_listed"] == 6 and result["kept_recent"] == 0
        again = await ctl(daemon, "gc")  # nothing left to free: it says what it kept, and why
        assert again["deleted_objects"] == 0 and again["kept_listed"] == 6
        assert len(before - after) == 6 and len(after) == 6
        assert check_published(daemon.config).ok
        kept, counted = store_totals(daemon.config.storage.path / "state.db")
        assert kept == counted and kept[0] == 6  # GC's removals kept in the totals


async def test_reload_applies_changes_and_refuses_a_broken_file(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 3))
    mirror.tree.put(OTHER, simple_specs("b", 2))
    config_path = daemon_config(mirror, KEY)
    async with running_daemon(mirror, config_path) as daemon:
        await synced(daemon, 1)
        good = config_path.read_text()
        daemon_config(mirror, KEY, OTHER, fetch={"rate_limit": "5MB/s"})
        result = await ctl(daemon, "reload")
        assert "repositories" in result["applied"] and "fetch.rate_limit" in result["applied"]
        assert daemon.runtime is not None and daemon.runtime.traffic.bucket.rate == 5_000_000
        await ctl(daemon, "rate", value="unlimited")
        await ctl(daemon, "sync")
        await synced(daemon, 2, KEY)
        await synced(daemon, 1, OTHER)  # a new arch syncs as soon as it is configured
        assert check_published(daemon.config).files == 5

        config_path.write_text(good.replace("interval: 3600", "interval: soon"))
        with pytest.raises(ControlError, match="interval"):
            await ctl(daemon, "reload")
        assert daemon.config.interval == 3600 and len(daemon.config.arch_keys()) == 2
        assert mirror.logs.events("config.reload.refused")


async def test_drain_finishes_the_running_sync_then_stops(mirror: Mirror) -> None:
    specs = simple_specs("a", 4)
    mirror.tree.put(KEY, specs[:3])
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        mirror.tree.put(KEY, specs)
        mirror.origin.add_fault(f"{KEY}/{specs[3].filename}", Fault.delay(0.5))
        await ctl(daemon, "sync")
        await mirror.origin.delaying.wait()
        await ctl(daemon, "drain")  # the sync is downloading: it finishes, then the daemon stops
        await daemon.stopping.wait()
    assert check_published(daemon.config).files == 4
    assert daemon.runtime is not None and daemon.runtime.book[KEY].runs == 2
    assert mirror.logs.events("daemon.stopped")


async def test_drain_when_idle_stops_without_another_sync(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 2))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        await ctl(daemon, "drain")
        await daemon.stopping.wait()
    assert daemon.runtime is not None and daemon.runtime.book[KEY].runs == 1


async def test_the_daemon_collects_garbage_on_its_own(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 5))
    config = daemon_config(
        mirror, KEY, publish={"keep_snapshots": 1, "grace": 0}, storage={"gc_interval": 0.01}
    )
    async with running_daemon(mirror, config) as daemon:
        await synced(daemon, 1)
        mirror.tree.put(KEY, [s.bumped() for s in simple_specs("a", 5)])
        await ctl(daemon, "sync")
        await synced(daemon, 2)
        async with daemon.collected:  # a collection on the timer that began after the publish
            seen = daemon.collections
            await daemon.collected.wait_for(lambda: daemon.collections > seen + 1)
        assert len(stored_objects(daemon.config.storage.path)) == 6  # no `ctl gc` needed
        assert sum(e["objects"] for e in mirror.logs.events("maintenance.gc.done")) == 6
        assert check_published(daemon.config).ok
