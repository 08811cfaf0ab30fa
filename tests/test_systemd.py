"""The systemd integration: unit files that systemd accepts, sd_notify, signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from mirrord.shell.control.client import call
from tests.helpers import REPO_ROOT, Mirror, check_published, spawn_mirrord
from tests.sdnotify import NotifyListener

UNIT = REPO_ROOT / "systemd" / "mirrord.service"
KEY = ArchKey("v3.20", "main", "x86_64")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: ./dev test installs Debian's systemd package")
    return found


def unit_for_this_checkout(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this checkout's mirrord
    (systemd-analyze verify insists that the binary exists)."""
    mirrord = str(Path(sys.executable).parent / "mirrord")
    unit = tmp_path / "mirrord.service"
    unit.write_text(UNIT.read_text().replace("/opt/mirrord/bin/mirrord", mirrord))
    return unit


def test_the_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for directive in (
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=mirrord",
        "StateDirectory=mirrord",
        "User=mirrord",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
        # serving first (benchmarks/RESULTS.md, "serving")
        "CPUWeight=20\n",
        "IOWeight=20\n",
        "Nice=10\n",
        "IOSchedulingClass=best-effort\n",
        "IOSchedulingPriority=7\n",
    ):
        assert directive in text, directive
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit_for_this_checkout(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_unit_scores_ok_or_better_in_systemd_analyze_security(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", str(unit_for_this_checkout(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert overall, result.stdout + result.stderr
    score = float(overall[0].split(":")[1].split()[0])
    verdict = overall[0].split(":")[1].split()[1]
    assert verdict in ("SAFE", "OK"), overall[0]
    assert score <= 2.0, overall[0]


def test_sysusers_and_tmpfiles_are_well_formed() -> None:
    sysusers = (REPO_ROOT / "systemd" / "mirrord.sysusers").read_text().splitlines()
    entries = [line.split() for line in sysusers if line and not line.startswith("#")]
    assert ["g", "mirrord", "-"] in entries
    assert any(e[0] == "u" and e[1] == "mirrord" for e in entries)
    tmpfiles = (REPO_ROOT / "systemd" / "mirrord.tmpfiles").read_text()
    assert "d /srv/mirror/alpine 0755 mirrord mirrord -" in tmpfiles
    if shutil.which("systemd-tmpfiles"):
        dry = subprocess.run(
            ["systemd-tmpfiles", "--cat-config"], capture_output=True, text=True, check=False
        )
        assert dry.returncode == 0


async def next_event(stream: asyncio.StreamReader, name: str) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(stream.readline(), 60)
        assert line, f"the daemon exited before {name}"
        record: dict[str, Any] = json.loads(line)
        if record["event"] == name:
            return record


async def test_sd_notify_ready_status_watchdog_reload_and_stopping(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 4))
    config = mirror.config_file(KEY)
    listener = NotifyListener(mirror.tmp / "notify.sock")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(listener.path),
        "WATCHDOG_USEC": "200000",
    }
    process = await spawn_mirrord(
        "run",
        "--config",
        str(config),
        "--log-format",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        ready = await listener.until(lambda m: m.get("READY") == "1")
        assert "STATUS" in ready
        await listener.until(lambda m: "current" in m.get("STATUS", ""))  # first sync done
        await listener.until(lambda m: m.get("WATCHDOG") == "1")
        await listener.until(lambda m: m.get("WATCHDOG") == "1")

        process.send_signal(signal.SIGHUP)
        reloading = await listener.until(lambda m: m.get("RELOADING") == "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        await listener.until(lambda m: m.get("READY") == "1")

        process.send_signal(signal.SIGTERM)
        await listener.until(lambda m: m.get("STOPPING") == "1")
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        listener.close()


async def test_sighup_with_a_broken_file_keeps_the_old_configuration(mirror: Mirror) -> None:
    mirror.tree.put(KEY, simple_specs("a", 4))
    config = mirror.config_file(KEY, interval=3600)
    process = await spawn_mirrord(
        "run", "--config", str(config), "--log-format", "json", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        await next_event(process.stdout, "sync.summary")  # every arch has synced once
        good = config.read_text()
        config.write_text(good + "\nsurprise: 1\n")
        process.send_signal(signal.SIGHUP)
        refused = await next_event(process.stdout, "config.reload.refused")
        assert "surprise" in refused["error"]
        config.write_text(good.replace("interval: 3600", "interval: 7200"))
        process.send_signal(signal.SIGHUP)
        done = await next_event(process.stdout, "config.reload.done")
        assert done["applied"] == ["interval"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_waits_for_downloads_then_a_second_one_stops_at_once(mirror: Mirror) -> None:
    specs = simple_specs("a", 6, payload=50_000)
    mirror.tree.put(KEY, specs[:3])
    control = mirror.tmp / "control.sock"
    config = mirror.config_file(
        KEY, interval=3600, shutdown_grace=600, control={"socket": str(control)}
    )
    process = await spawn_mirrord(
        "run", "--config", str(config), "--log-format", "json", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        await next_event(process.stdout, "sync.summary")  # every arch has synced once
        # Now a sync whose last download never ends.
        mirror.tree.put(KEY, specs)
        mirror.origin.add_fault(f"{KEY}/{specs[-1].filename}", Fault.stall(after=10))
        assert (await call(control, "sync", {}))["arches"] == {str(KEY): "started"}
        await mirror.origin.stalled.wait()

        process.send_signal(signal.SIGTERM)
        await next_event(process.stdout, "daemon.stopping")
        assert process.returncode is None  # waiting for the stalled download, within the grace
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 20)
        assert code != 0  # stopped at once, and said so
    finally:
        mirror.origin.release_stalls.set()
        if process.returncode is None:
            process.kill()
            await process.wait()
    report = check_published(mirror.config(KEY))
    assert report.ok and report.files == 3  # the old snapshot, intact
