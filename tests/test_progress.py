"""``mirrord sync`` shows its progress: drawn on a terminal, logged elsewhere.

A real ``mirrord sync`` process against the real origin, held mid-download by
a stalled package, so there is progress to show; then released.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re

from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from mirrord.shell.progress import summary
from mirrord.sync.status import ArchResult, Outcome
from tests.helpers import Mirror, check_published, spawn_mirrord

KEY = ArchKey("v3.20", "main", "x86_64")
LIMIT = 60.0


def stalled_origin(mirror: Mirror) -> int:
    specs = simple_specs("p", 6, payload=20_000)
    mirror.tree.put(KEY, specs)
    mirror.origin.add_fault(f"{KEY}/{specs[-1].filename}", Fault.stall())
    return len(specs)


async def test_without_a_terminal_progress_is_a_log_line(mirror: Mirror) -> None:
    packages = stalled_origin(mirror)
    config = mirror.config_file(KEY, log={"format": "json"})
    process = await spawn_mirrord(
        "sync", "--config", str(config), "--progress", "0.1", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(LIMIT):
        while True:
            line = await process.stdout.readline()
            assert line, "mirrord sync ended without a progress line"
            record = json.loads(line)
            if record["event"] == "sync.progress" and mirror.origin.stalled.is_set():
                break
        (arch,) = record["arches"]
        assert arch["arch"] == str(KEY) and arch["planned_files"] == packages
        assert arch["files"] < packages and arch["bytes"] < arch["planned_bytes"]
        mirror.origin.release_stalls.set()
        await process.stdout.read()
        assert await process.wait() == 0
    assert check_published(mirror.config(KEY)).files == packages


async def test_on_a_terminal_each_downloading_arch_has_a_live_line(mirror: Mirror) -> None:
    packages = stalled_origin(mirror)
    config = mirror.config_file(KEY, log={"format": "json"})
    controller, terminal = pty.openpty()
    try:
        process = await spawn_mirrord(
            "sync",
            "--config",
            str(config),
            "--progress",
            "0.1",
            stdout=asyncio.subprocess.DEVNULL,  # the logs go elsewhere: lines are drawn
            stderr=terminal,
        )
        os.close(terminal)
        seen = b""
        async with asyncio.timeout(LIMIT):
            while b"files" not in seen or not mirror.origin.stalled.is_set():
                seen += await asyncio.to_thread(os.read, controller, 4096)
            mirror.origin.release_stalls.set()
            assert await process.wait() == 0
            while b"fetched" not in seen:
                seen += await asyncio.to_thread(os.read, controller, 4096)
    finally:
        os.close(controller)
    text = seen.decode()
    drawn = re.search(rf"{KEY}: (\d+)/{packages} files, [\d.]+ [kKMG]?B of [\d.]+ [kKMG]?B", text)
    assert drawn is not None and int(drawn.group(1)) < packages, text
    assert "\x1b[K" in text  # drawn in place, not scrolled
    assert "mirrord: 1 arches in " in text and f": 1 published; fetched {packages} files" in text


def test_the_summary_counts_outcomes_and_bytes() -> None:
    results = [
        ArchResult(KEY, Outcome.PUBLISHED, fetched=3, fetched_bytes=3_000_000),
        ArchResult(ArchKey("v3.20", "main", "aarch64"), Outcome.UNCHANGED),
        ArchResult(ArchKey("edge", "main", "x86_64"), Outcome.FAILED, error="boom"),
    ]
    assert summary(results, 75.0) == (
        "mirrord: 3 arches in 1m15s: 1 published, 1 unchanged, 1 failed; fetched 3 files, 3.0 MB"
    )
