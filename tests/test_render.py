"""``mirrord ctl``'s human output, on sample replies: exact lines, never ``None``."""

from __future__ import annotations

from typing import Any

import pytest

from mirrord.shell.control.render import duration, reply

NOW = 1_700_000_000.0


def arch(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "arch": name,
        "snapshot": None,
        "published_at": None,
        "packages": 0,
        "bytes": 0,
        "published_last_modified": None,
        "origin_last_modified": None,
        "lag": 0.0,
        "last_outcome": None,
        "last_error": None,
        "last_success": None,
        "held": False,
        "state": "idle",
        "behind_since": None,
        "last_poll": None,
        "next_poll": None,
        "rerun_queued": False,
        "syncs": 0,
    }
    return {**base, **fields}


def status_reply(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": "0.1.0",
        "pid": 4242,
        "uptime": 11_532.0,
        "paused": False,
        "draining": False,
        "sync": {"syncing": [], "interval": 60},
        "rate": {"limit": None, "limit_text": "unlimited", "source": "config", "measured": 0.0},
        "downloads": {"in_flight": 0, "queued": 0},
        "store": {"objects": 0, "bytes": 0},
        "verify": {
            "running": False,
            "repair": False,
            "total": 0,
            "checked": 0,
            "damaged": 0,
            "missing": 0,
            "repaired": 0,
            "started_at": None,
            "finished_at": None,
        },
        "arches": [],
    }
    return {**base, **fields}


def test_status_is_a_header_block_and_a_table() -> None:
    result = status_reply(
        paused=True,
        **{
            "sync": {"syncing": ["v3.20/main/x86_64"], "interval": 60},
            "rate": {
                "limit": 50e6,
                "limit_text": "50.0 MB/s",
                "source": "override",
                "measured": 1_234_567.0,
                "origin_rtt": 0.0804,
                "held_back": [8_192_000.0, 27 << 20],
            },
            "downloads": {"in_flight": 3, "queued": 120},
            "store": {"objects": 12_345, "bytes": 3_200_000_000},
            "verify": {
                **status_reply()["verify"],
                "running": True,
                "total": 5678,
                "checked": 1234,
                "started_at": NOW - 60,
            },
        },
        arches=[
            arch(
                "v3.20/main/x86_64",
                snapshot=12,
                published_at=NOW - 192,
                packages=1234,
                lag=192.0,
                last_outcome="published",
                state="syncing",
                rerun_queued=True,
            ),
            arch(
                "v3.20/community/aarch64",
                last_outcome="failed",
                last_error="signature check failed: index is not signed (no .SIGN.RSA member)"
                " and the rest of a long story",
                held=True,
                state="held",
            ),
            arch("v3.21/main/x86_64", state="idle", next_poll=NOW + 42, last_outcome="unchanged"),
        ],
    )
    assert reply("status", result, NOW).splitlines() == [
        "mirrord 0.1.0 (pid 4242): paused (in-flight downloads finish; "
        "'mirrord ctl resume' continues)",
        "    uptime: 3h12m",
        "   syncing: v3.20/main/x86_64; each arch polls every 1m00s",
        "rate limit: 50.0 MB/s (override, kept across restarts until 'mirrord ctl rate schedule'), "
        "measured 1.2 MB/s",
        " held back: at the origin's 80 ms round trip the receive windows carry at most "
        "8.2 MB/s; fetch.burst: 27MiB would reach the limit",
        " downloads: 3 in flight, 120 queued",
        "     store: 12,345 objects, 3.2 GB",
        "    verify: running, 1,234 of 5,678 objects, 0 damaged",
        "",
        "ARCH                     STATE                SNAPSHOT  PACKAGES  PUBLISHED  LAG    "
        "NEXT POLL  LAST",
        "v3.20/main/x86_64        syncing (+1 queued)        12     1,234  3m12s ago  3m12s  "
        "-          published",
        "v3.20/community/aarch64  held                        -         0  never      -      "
        "-          failed: signature check failed: index is not signed (no .SIGN.RSA m…",
        "v3.21/main/x86_64        idle                        -         0  never      -      "
        "in 42s     unchanged",
        "",
        "v3.20/community/aarch64: failed: signature check failed: index is not signed "
        "(no .SIGN.RSA member) and the rest of a long story",
    ]


def test_errors_the_tables_cut_are_shown_whole_under_them_at_most_ten() -> None:
    force = "'mirrord ctl publish --force {}'"
    long = "refusing to publish: the origin serves an older index (...); force it once: "
    arches = [
        arch(f"v3.20/main/arch{n:02}", last_outcome="refused", last_error=long + force.format(n))
        for n in range(11)
    ]
    arches.append(arch("edge/main/x86_64", last_outcome="failed", last_error="HTTP 503"))
    trees = {
        "running": False,
        "interval": 600,
        "latest_stable": "v3.20",
        "directories": [
            {"directory": "v3.20/releases/x86_64", "outcome": "refused", "error": long + "x"}
        ],
    }
    lines = reply("status", status_reply(arches=arches[:1], trees=trees), NOW).splitlines()
    assert lines[-3:] == [
        "",
        f"v3.20/main/arch00: refused: {long}{force.format(0)}",
        f"v3.20/releases/x86_64: refused: {long}x",
    ]
    lines = reply("status", status_reply(arches=arches), NOW).splitlines()
    assert lines[-11:] == [
        *(f"v3.20/main/arch{n:02}: refused: {long}{force.format(n)}" for n in range(10)),
        "... and 1 more: 'mirrord ctl --json status'",
    ]
    assert not any(line.startswith("edge/main/x86_64:") for line in lines)  # shown whole


def test_a_fresh_daemon_prints_no_none() -> None:
    result = status_reply(arches=[arch("v3.20/main/x86_64")])
    text = reply("status", result, NOW)
    assert "None" not in text
    assert text.splitlines()[1:7] == [
        "    uptime: 3h12m",
        "   syncing: none; each arch polls every 1m00s",
        "rate limit: unlimited (from the configuration), measured 0 B/s",
        " downloads: 0 in flight, 0 queued",
        "     store: 0 objects, 0 B",
        "    verify: never run since the daemon started",
    ]
    assert text.splitlines()[-1] == (
        "v3.20/main/x86_64  idle          -         0  never      -    -          -"
    )


def test_status_shows_each_sync_in_progress_under_syncing() -> None:
    progress = {
        "arch": "v3.21/main/x86_64",
        "planned_files": 5000,
        "planned_bytes": 400_000_000,
        "done_files": 1234,
        "done_bytes": 12_000_000,
        "failed_files": 0,
        "rate": 3_200_000.0,
        "eta": 121.25,
    }
    sync = {"syncing": ["v3.21/main/x86_64"], "interval": 60, "progress": [progress]}
    lines = reply("status", status_reply(sync=sync), NOW).splitlines()
    assert lines[2:4] == [
        "   syncing: v3.21/main/x86_64; each arch polls every 1m00s",
        "            v3.21/main/x86_64: 1,234/5,000 files, 12.0 MB of 400.0 MB, 3.2 MB/s, "
        "ETA 2m01s",
    ]


def test_the_push_trigger_is_one_line_and_absent_when_not_configured() -> None:
    assert not any(
        "push" in line for line in reply("status", status_reply(push=None), NOW).split("\n")
    )
    push = {
        "broker": "mqtt://msg.alpinelinux.org:1883",
        "connected": True,
        "connected_since": NOW - 3600,
        "messages": 1234,
        "last_push": NOW - 12,
    }
    lines = reply("status", status_reply(push=push), NOW).splitlines()
    assert (
        "      push: connected to mqtt://msg.alpinelinux.org:1883 since 1h00m ago, "
        "1,234 messages, last 12s ago"
    ) in lines
    down = {**push, "connected": False, "last_push": None}
    assert (
        "      push: not connected to mqtt://msg.alpinelinux.org:1883 (retrying; polls keep the "
        "mirror fresh), 1,234 messages, last never"
    ) in reply("status", status_reply(push=down), NOW).splitlines()


def test_fields_a_newer_daemon_adds_are_shown() -> None:
    result = status_reply(
        heartbeat=NOW - 30,
        arches=[
            arch("v3.20/main/x86_64", next_poll=NOW + 42, queued=7),
            arch("v3.20/main/aarch64", state="fetching", queued=1200),
        ],
    )
    lines = reply("status", result, NOW).splitlines()
    assert " heartbeat: 30s ago" in lines
    assert lines[-3:] == [
        "ARCH                STATE     SNAPSHOT  PACKAGES  PUBLISHED  LAG  NEXT POLL  QUEUED  LAST",
        "v3.20/main/x86_64   idle             -         0  never      -    in 42s     7       -",
        "v3.20/main/aarch64  fetching         -         0  never      -    -          1,200   -",
    ]


@pytest.mark.parametrize(
    ("cmd", "result", "expected"),
    [
        (
            "rate",
            {"limit": 50e6, "limit_text": "50.0 MB/s", "source": "override"},
            "rate limit: 50.0 MB/s "
            "(override, kept across restarts until 'mirrord ctl rate schedule')",
        ),
        (
            "rate",
            {"limit": None, "limit_text": "unlimited", "source": "config"},
            "rate limit: unlimited (from the configuration)",
        ),
        (
            "sync",
            {
                "queued": ["v3.20/main/aarch64", "v3.20/main/x86_64", "v3.21/main/x86_64"],
                "arches": {
                    "v3.20/main/aarch64": "started",
                    "v3.20/main/x86_64": "queued",
                    "v3.21/main/x86_64": "started",
                },
                "paused": False,
            },
            "sync: v3.20/main/aarch64, v3.21/main/x86_64: syncing now\n"
            "sync: v3.20/main/x86_64: syncing: one more sync follows this one",
        ),
        (
            "sync",
            {"queued": ["v3.20/main/x86_64"], "arches": {"v3.20/main/x86_64": "paused"}},
            "sync: v3.20/main/x86_64: paused: it syncs on 'mirrord ctl resume'",
        ),
        ("sync", {"queued": [], "arches": {}}, "sync: nothing to start (every arch is held)"),
        (
            "pause",
            {"paused": True},
            "paused: no new syncs or downloads start (arches are still polled, for lag)",
        ),
        ("resume", {"paused": False}, "resumed: syncs and downloads go on"),
        (
            "resume",
            {"released": ["v3.20/main/x86_64"]},
            "resume: released the hold on v3.20/main/x86_64; it syncs now",
        ),
        (
            "rollback",
            {"arch": "v3.20/main/x86_64", "snapshot": 3, "held": True, "note": "held: see"},
            "rolled back v3.20/main/x86_64 to snapshot 3\nheld: see",
        ),
        (
            "publish",
            {
                "forced": "v3.20/main/x86_64",
                "queued": ["v3.20/main/x86_64"],
                "arches": {"v3.20/main/x86_64": "queued"},
                "paused": False,
            },
            "publish: v3.20/main/x86_64 will be published once past the mass-deletion guard "
            "(syncing: one more sync follows this one)",
        ),
        (
            "verify",
            {**status_reply()["verify"], "running": True, "repair": True},
            "verify: started with repair (damaged objects are fetched again); "
            "'mirrord ctl status' shows progress",
        ),
        ("gc", {"deleted_objects": 0, "freed_bytes": 0}, "gc: nothing to delete"),
        (
            "gc",
            {"deleted_objects": 6, "freed_bytes": 12_300_000, "other": 2},
            "gc: deleted 6 objects, freed 12.3 MB\n  other: 2",
        ),
        (
            "gc",
            {
                "deleted_objects": 0,
                "freed_bytes": 0,
                "kept_listed": 1234,
                "kept_recent": 5,
                "kept_in_use": 0,
                "grace": 3600,
            },
            "gc: nothing to delete; kept 1,234 listed by kept snapshots (publish.keep_snapshots), "
            "5 stored less than publish.grace (1h00m) ago",
        ),
        (
            "reload",
            {"applied": ["fetch.rate_limit"], "needs_restart": ["metrics.listen"]},
            "reload: applied fetch.rate_limit; needs a restart to apply: metrics.listen",
        ),
        ("reload", {"applied": [], "needs_restart": []}, "reload: nothing changed"),
        (
            "reload",
            {"applied": ["purge.urls"], "needs_restart": [], "restarted": ["purge"]},
            "reload: applied purge.urls; restarted services: purge",
        ),
        (
            "reload",
            {"applied": [], "needs_restart": [], "restarted": ["purge"]},
            "reload: applied nothing; restarted services: purge",
        ),
        (
            "drain",
            {"draining": True, "note": "finishing the syncs in progress, then stopping"},
            "draining: finishing the syncs in progress, then stopping",
        ),
        ("launch", {"count": 3, "when": None}, "launch:\n  count: 3\n  when: -"),
    ],
)
def test_each_reply_is_a_sentence(cmd: str, result: dict[str, Any], expected: str) -> None:
    assert reply(cmd, result, NOW) == expected


def test_snapshots_are_a_table() -> None:
    result = {
        "arch": "v3.20/main/x86_64",
        "snapshots": [
            {
                "id": 12,
                "created_at": NOW,
                "status": "published",
                "current": True,
                "packages": 1234,
                "bytes": 123_456_789,
                "index_sha256": "ab" * 32,
                "last_modified": None,
                "description": None,
                "forced": False,
            },
            {
                "id": 3,
                "created_at": NOW - 86_400,
                "status": "superseded",
                "current": False,
                "packages": 1200,
                "bytes": 120_000_000,
                "index_sha256": "cd" * 32,
                "last_modified": None,
                "description": "rollback",
                "forced": True,
            },
        ],
    }
    assert reply("snapshots", result, NOW).splitlines() == [
        "snapshots of v3.20/main/x86_64 (ids count across all arches; roll back with "
        "'mirrord ctl rollback v3.20/main/x86_64 ID'):",
        "ID  CREATED (UTC)        STATUS      PACKAGES      SIZE  INDEX         NOTE",
        "12  2023-11-14 22:13:20  published      1,234  123.5 MB  abababababab  published now",
        " 3  2023-11-13 22:13:20  superseded     1,200  120.0 MB  cdcdcdcdcdcd  forced; rollback",
    ]
    empty = {"arch": "v3.20/main/x86_64", "snapshots": []}
    assert reply("snapshots", empty, NOW) == "v3.20/main/x86_64: no snapshots remembered"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0s"), (1.25, "1.2s"), (45, "45s"), (192, "3m12s"), (7500, "2h05m"), (273_600, "3d04h")],
)
def test_durations_read_like_3m12s(seconds: float, text: str) -> None:
    assert duration(seconds) == text
