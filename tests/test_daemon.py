"""`mirrord run` as systemd runs it: passes on a timer, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from tests.helpers import Mirror, spawn_mirrord

KEY = ArchKey("v3.20", "main", "x86_64")


async def next_event(stream: asyncio.StreamReader, name: str) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(stream.readline(), 60)
        assert line, f"daemon exited before {name}"
        record: dict[str, Any] = json.loads(line)
        if record["event"] == name:
            return record


async def test_run_publishes_each_interval_and_stops_cleanly_on_sigterm(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 5))
    config = mirror.config_file(KEY, interval=1)
    process = await spawn_mirrord(
        "run", "--config", str(config), "--log-format", "json", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        first = await next_event(process.stdout, "sync.arch.done")
        assert first["outcome"] == "published" and first["arch"] == str(KEY)
        mirror.tree.put(KEY, simple_specs("a", 6))
        while (record := await next_event(process.stdout, "sync.arch.done"))[
            "outcome"
        ] != "published":
            assert record["outcome"] == "unchanged"
        assert record["packages"] == 6
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 60)
    assert code == 0
    stopped = await process.stdout.read()
    assert b'"daemon.stopped"' in stopped
