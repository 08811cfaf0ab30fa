"""Standard streams in trouble: the log's reader goes away or stops reading, stdout is closed.

The log reader of a daemon can die under it (the log process of a supervisor,
``mirrord run | tee``, a journald stream: writing then fails with EPIPE at
whatever line logs next) or stall (a hung journald: writing blocks). Neither
may stop or freeze a sync or the daemon (``core.logoutput``). On journald each
line carries its priority; a command started with stdout closed publishes all
the same (``shell.cli``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from mirrord.core.config import Config
from mirrord.core.config.parse import load_config
from mirrord.core.logoutput import LogOutput
from mirrord.core.logs import make_logger
from mirrord.core.model import ArchKey
from mirrord.core.streams import reader_gone, to_devnull
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from mirrord.shell.control import render
from mirrord.shell.control.client import call
from tests.daemon_harness import daemon_config
from tests.helpers import (
    REPO_ROOT,
    Mirror,
    check_published,
    pipe_without_reader,
    spawn_mirrord,
    until,
)
from tests.prom import samples, scrape, value
from tests.sdnotify import NotifyListener

KEY = ArchKey("v3.20", "main", "x86_64")
SAID = (
    "mirrord: cannot write the log ([Errno 32] Broken pipe): the lines that cannot be "
    "written are dropped, counted in mirrord_log_lines_dropped_total"
)


def test_reader_gone_tells_a_pipe_nobody_reads_from_one_still_read_and_from_a_file(
    tmp_path: Path,
) -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as stream, (tmp_path / "file").open("w") as file:
        assert not reader_gone(stream)
        os.close(read)
        assert reader_gone(stream)
        assert not reader_gone(file)
        to_devnull(stream)  # and then it writes nowhere, without an error
        stream.write("gone\n")
        stream.flush()


def full_pipe() -> tuple[int, int, int]:
    """(read end, write end, bytes in it): a pipe whose reader stopped reading once it was full."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    capacity = fcntl.fcntl(write, fcntl.F_GETPIPE_SZ)
    os.write(write, b"#" * capacity)
    return read, write, capacity


def read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as reader:
        return reader.read()


def test_lines_to_a_pipe_without_reader_are_dropped_counted_and_said_once(
    tmp_path: Path,
) -> None:
    stream = os.fdopen(pipe_without_reader(), "w")
    fd = stream.fileno()
    with (tmp_path / "stderr").open("w+") as complaints:
        output = LogOutput(stream, complaints=complaints)
        log = make_logger("info", "json", output=output)
        for number in range(3):
            log.info("test.line", number=number)
        assert output.dropped == 3
        complaints.seek(0)
        assert complaints.read().splitlines() == [SAID]
    # The pipe is not tried again; what was left buffered goes nowhere, quietly.
    assert os.readlink(f"/proc/self/fd/{fd}") == os.devnull
    stream.close()


def test_a_full_disk_drops_each_line_it_refuses_and_keeps_the_file(tmp_path: Path) -> None:
    stream = open("/dev/full", "w")  # noqa: SIM115 (closed below, after its failed flush)
    with (tmp_path / "stderr").open("w+") as complaints:
        output = LogOutput(stream, complaints=complaints)
        log = make_logger("info", "json", output=output)
        log.info("test.one")
        log.warning("test.two")
        assert output.dropped == 2
        complaints.seek(0)
        [said] = complaints.read().splitlines()
    assert "No space left on device" in said
    # Space may come back: unlike a broken pipe, each line is still tried.
    assert os.readlink(f"/proc/self/fd/{stream.fileno()}") == "/dev/full"
    with contextlib.suppress(OSError):
        stream.close()


def test_written_behind_a_reader_that_stopped_the_lines_that_fit_wait_and_keep_their_order(
    tmp_path: Path,
) -> None:
    read, write, filler = full_pipe()
    stream = os.fdopen(write, "w")
    with (tmp_path / "stderr").open("w+") as complaints:
        output = LogOutput(stream, complaints=complaints, write_behind=True, buffer_bytes=2000)
        log = make_logger("info", "json", output=output)
        for number in range(200):  # ~20 kB: far more than the buffer, the pipe already full
            log.info("test.line", number=number)  # returns at once, written or not
        dropped = output.dropped
        assert 0 < dropped < 200
        complaints.seek(0)
        [said] = complaints.read().splitlines()
        assert said.startswith("mirrord: the log reader has not taken the last ")
        # The reader comes back: what waited goes out, and close() waits for it.
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(read_all(read)))
        reader.start()
        output.close(timeout=30)
        log.info("test.after_close")  # written before it returns
        stream.close()
        reader.join(30)
    data = received[0]
    assert data[:filler] == b"#" * filler
    records = [json.loads(line) for line in data[filler:].splitlines()]
    numbers = [r["number"] for r in records if r["event"] == "test.line"]
    assert numbers == sorted(numbers)
    assert len(numbers) + dropped == 200
    assert output.dropped == dropped
    assert records[-1]["event"] == "test.after_close"


PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


async def test_on_journald_each_line_starts_with_its_priority(mirror: Mirror) -> None:
    specs = simple_specs("a", 4)
    mirror.tree.put(KEY, specs)
    mirror.origin.add_fault(f"{KEY}/{specs[0].filename}", Fault.corrupt())  # a warning
    config_path = mirror.config_file(KEY)
    outputs = []
    for connected in (True, False):  # journald's stream, then stdout sent elsewhere
        read, write = os.pipe()
        pipe = os.fstat(write)
        inode = pipe.st_ino if connected else pipe.st_ino + 1
        try:
            process = await spawn_mirrord(
                "sync",
                "--config",
                str(config_path),
                "--log-level",
                "debug",
                "--log-format",
                "json",
                env={**os.environ, "JOURNAL_STREAM": f"{pipe.st_dev}:{inode}"},
                stdout=write,
            )
        finally:
            os.close(write)
        outputs.append(await asyncio.to_thread(read_all, read))
        assert await process.wait() == 0

    levels = set()
    for line in outputs[0].decode().splitlines():
        prefix = re.match(r"<([0-7])>", line)
        assert prefix is not None, line
        level = json.loads(line[prefix.end() :])["level"]
        assert int(prefix[1]) == PRIORITIES[level], line
        levels.add(level)
    assert {"info", "warning"} <= levels
    unprefixed = outputs[1].decode().splitlines()
    assert unprefixed
    assert all(json.loads(line)["level"] in PRIORITIES for line in unprefixed)


async def test_a_sync_started_with_stdout_closed_publishes_and_logs_into_no_file(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 5))
    config_path = mirror.config_file(KEY)
    command = [sys.executable, "-m", "mirrord.shell.cli", "sync", "--config", str(config_path)]
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", 'exec "$@" >&-', "sh", *command, cwd=REPO_ROOT, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert err == b""
    config = load_config(config_path)
    assert check_published(config).ok
    # No file took stdout's number and a log line with it.
    for root in (config.storage.path, config.publish.path):
        for path in root.rglob("*"):
            if path.is_file():
                assert b'"event": ' not in path.read_bytes(), path
    again = await spawn_mirrord("sync", "--config", str(config_path))
    assert await again.wait() == 0  # its state database whole


async def test_a_sync_whose_log_reader_went_away_publishes_and_says_so_once(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 5))
    config_path = mirror.config_file(KEY)
    stdout = pipe_without_reader()
    try:
        process = await spawn_mirrord(
            "sync",
            "--config",
            str(config_path),
            "--log-format",
            "json",
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(stdout)
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert err.decode().splitlines() == [SAID]
    config = load_config(config_path)
    index = config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz")
    assert index.read_bytes() == (mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz").read_bytes()
    assert check_published(config).ok


@contextlib.asynccontextmanager
async def published_daemon(
    mirror: Mirror, stdout: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Config]]:
    """A real ``mirrord run`` logging into ``stdout`` (closed here), once it has published."""
    mirror.tree.put(KEY, simple_specs("a", 5))
    config_path = daemon_config(mirror, KEY)
    config = load_config(config_path)
    listener = NotifyListener(mirror.tmp / "notify.sock")
    try:
        process = await spawn_mirrord(
            "run",
            "--config",
            str(config_path),
            "--log-format",
            "json",
            env={**os.environ, "NOTIFY_SOCKET": str(listener.path)},
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(stdout)
    try:
        await listener.until(lambda m: m.get("READY") == "1", within=30)
        index = config.publish.path.joinpath(*KEY.parts, "APKINDEX.tar.gz")
        await until(index.exists, 30, "the first sync's index (no log line tells)")
        assert check_published(config).ok
        yield process, config
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        listener.close()


async def test_the_daemon_keeps_mirroring_without_its_log_reader_and_counts_the_lines(
    mirror: Mirror,
) -> None:
    async with published_daemon(mirror, pipe_without_reader()) as (process, config):
        found = samples(await scrape(f"http://{config.metrics.listen}"))
        assert value(found, "mirrord_log_lines_dropped_total") > 0
        assert config.control.socket is not None
        reply = await call(config.control.socket, "status", {})
        assert reply["log"]["dropped"] > 0
        shown = render.status(reply)
        assert "log: " in shown
        assert "lines dropped: cannot write the log ([Errno 32] Broken pipe)" in shown
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{config.metrics.listen}/") as page,
        ):
            assert "lines dropped: cannot write the log ([Errno 32] Broken pipe)" in (
                await page.text()
            )

        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert err.decode().splitlines() == [SAID]


async def test_the_daemon_mirrors_on_while_its_log_reader_does_not_read(mirror: Mirror) -> None:
    read, write, filler = full_pipe()  # any line written at once would block
    async with published_daemon(mirror, write) as (process, config):
        found = samples(await scrape(f"http://{config.metrics.listen}"))
        assert value(found, "mirrord_log_lines_dropped_total") == 0
        assert config.control.socket is not None
        reply = await call(config.control.socket, "status", {})
        assert reply["log"] == {"dropped": 0, "trouble": None}
        assert "log: every line written" in render.status(reply)

        process.send_signal(signal.SIGTERM)  # then the reader reads again
        data = await asyncio.to_thread(read_all, read)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert err == b""
    assert data[:filler] == b"#" * filler
    events = [json.loads(line)["event"] for line in data[filler:].splitlines()]
    assert events[0] == "recovery.store.compare"
    assert "sync.arch.done" in events
    assert events[-1] == "daemon.stopped"
