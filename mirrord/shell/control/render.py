"""Human output for ``mirrord ctl`` (``--json`` prints the daemon's answer as is)."""

from __future__ import annotations

import time
from typing import Any

from mirrord.core.units import format_bytes


def _ago(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    return f"{_duration(now - moment)} ago"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def status(result: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []
    state = "paused" if result["paused"] else ("draining" if result["draining"] else "running")
    syncing = result["sync"]["syncing"]
    current = f"{len(syncing)} syncing" if syncing else "all idle"
    lines.append(f"mirrord {result['version']} (pid {result['pid']}): {state}, {current}")
    rate = result["rate"]
    measured = format_bytes(rate["measured"])
    lines.append(f"rate limit {rate['limit_text']} ({rate['source']}), measured {measured}/s")
    downloads = result["downloads"]
    lines.append(f"downloads: {downloads['in_flight']} in flight, {downloads['queued']} queued")
    store = result["store"]
    lines.append(f"store: {store['objects']} objects, {format_bytes(store['bytes'])}")
    verify = result["verify"]
    if verify["started_at"] is not None:
        done = "running" if verify["running"] else "done"
        lines.append(
            f"verify ({done}): {verify['checked']}/{verify['total']} checked, "
            f"{verify['damaged']} damaged, {verify['missing']} missing, "
            f"{verify['repaired']} repaired"
        )
    lines.append("")
    header = f"{'ARCH':<28} {'SNAPSHOT':>8} {'PACKAGES':>8} {'PUBLISHED':>10} {'LAG':>6}  LAST"
    lines.append(header)
    for arch in result["arches"]:
        last = arch["last_outcome"] or "-"
        if arch["state"] != "idle":
            last = f"{arch['state'].upper()} ({last})"
        if arch["last_error"]:
            last += f": {arch['last_error']}"
        snapshot = "-" if arch["snapshot"] is None else str(arch["snapshot"])
        lines.append(
            f"{arch['arch']:<28} {snapshot:>8} {arch['packages']:>8} "
            f"{_ago(arch['published_at'], now):>10} {_duration(arch['lag']):>6}  {last}"
        )
    return "\n".join(lines)


def snapshots(result: dict[str, Any]) -> str:
    lines = [f"snapshots of {result['arch']}:"]
    lines.append(
        f"{'ID':>6}  {'CREATED (UTC)':<20} {'STATUS':<11} {'PACKAGES':>8} {'BYTES':>10}  INDEX"
    )
    for s in result["snapshots"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s["created_at"]))
        marker = " *" if s["current"] else ""
        lines.append(
            f"{s['id']:>6}  {created:<20} {s['status']:<11} {s['packages']:>8} "
            f"{format_bytes(s['bytes']):>10}  {s['index_sha256'][:12]}{marker}"
        )
    lines.append("(* = published now)")
    return "\n".join(lines)


def generic(cmd: str, result: Any) -> str:
    if isinstance(result, dict):
        parts = [f"{key}={value}" for key, value in result.items() if key != "note"]
        text = f"{cmd}: " + ", ".join(parts)
        if "note" in result:
            text += f"\n{result['note']}"
        return text
    return f"{cmd}: {result}"
