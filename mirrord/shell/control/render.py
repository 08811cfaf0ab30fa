"""Human output for ``mirrord ctl``: sentences and tables (``--json`` prints the reply as is).

Every renderer reads the keys it knows and shows any others the daemon adds as
``key: value`` lines (or, per arch, as extra columns), so a newer daemon's
replies still read well. An absent value prints as ``-`` or ``never``, never
``None``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mirrord.core.units import format_bytes, format_mib

Reply = Mapping[str, Any]

MAX_ERROR = 60
MAX_FULL_ERRORS = 10  # cut short in a table, shown whole under it


def reply(cmd: str, result: Any, now: float | None = None) -> str:
    """The human text for ``cmd``'s reply."""
    now = time.time() if now is None else now
    if not isinstance(result, Mapping):
        return f"{cmd}: {_value(result, now)}"
    if cmd == "status":
        return status(result, now)
    renderer = _RENDERERS.get(cmd)
    if renderer is None:
        return "\n".join([f"{cmd}:", *_extras(result, (), now)])
    text, known = renderer(result)
    return "\n".join([text, *_extras(result, known, now)])


# --- status ---------------------------------------------------------------------------

# What the daemon's status reply holds today; any other key is shown as it comes.
_STATUS_KEYS = {"version", "pid", "paused", "draining", "uptime", "sync", "rate", "downloads"}
_STATUS_KEYS |= {"store", "verify", "arches", "push", "announce", "purge", "trees", "background"}
_STATUS_KEYS |= {"bucket", "fleet", "health", "log"}
_ARCH_COLUMNS = {"arch", "state", "snapshot", "packages", "published_at", "lag", "next_poll"}
_ARCH_COLUMNS |= {"last_outcome", "last_error", "held", "rerun_queued"}
_ARCH_HIDDEN = {"bytes", "published_last_modified", "origin_last_modified", "last_success"}
_ARCH_HIDDEN |= {"behind_since", "last_poll", "syncs"}


def status(result: Reply, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if result.get("paused"):
        state = "paused (in-flight downloads finish; 'mirrord ctl resume' continues)"
    elif result.get("draining"):
        state = "draining (finishing the syncs in progress, then stopping)"
    else:
        state = "running"
    rate, downloads, store = (result.get(key) or {} for key in ("rate", "downloads", "store"))
    fields = [
        ("uptime", duration(result.get("uptime") or 0.0)),
        ("syncing", _syncing(result.get("sync") or {})),
        ("rate limit", f"{_rate(rate)}, measured {_bytes(rate.get('measured'))}/s"),
        *_held_back(rate),
        (
            "downloads",
            f"{_count(downloads.get('in_flight'))} in flight, "
            f"{_count(downloads.get('queued'))} queued",
        ),
        ("store", f"{_count(store.get('objects'))} objects, {_bytes(store.get('bytes'))}"),
        ("verify", _verify(result.get("verify") or {}, now)),
    ]
    background = result.get("background")
    if isinstance(background, Mapping):
        fields.append(("background", _background(background, now)))
    log = result.get("log")
    if isinstance(log, Mapping):
        fields.append(("log", _log(log)))
    fields += downstream_lines(result, now)
    fleet = fleet_line(result, now)
    if fleet is not None:
        fields.append(("fleet", fleet))
    health = health_line(result)
    if health is not None:
        fields.append(("health", health))
    fields += [(k, _value(v, now)) for k, v in result.items() if k not in _STATUS_KEYS]
    width = max(len(label) for label, _ in fields)
    lines = [f"mirrord {result.get('version', '?')} (pid {result.get('pid', '?')}): {state}"]
    sync = result.get("sync") or {}
    progress: Sequence[Reply] = sync.get("progress") or () if isinstance(sync, Mapping) else ()
    for label, text in fields:
        lines.append(f"{label:>{width}}: {text}")
        if label == "syncing":  # each sync's downloads, under it
            lines += [f"{'':>{width}}  {progress_line(p)}" for p in progress]
    arches: Sequence[Reply] = result.get("arches") or ()
    if arches:
        lines += ["", *_arch_table(arches, now)]
    trees = result.get("trees")
    if isinstance(trees, Mapping):
        lines += ["", *_tree_table(trees, now)]
    lines += _errors_in_full(
        [(a.get("arch"), a.get("last_outcome"), a.get("last_error")) for a in arches]
        + [
            (t.get("directory"), t.get("outcome"), t.get("error"))
            for t in (trees.get("directories") or () if isinstance(trees, Mapping) else ())
        ]
    )
    return "\n".join(lines)


def _errors_in_full(outcomes: Sequence[tuple[object, object, object]]) -> list[str]:
    """The errors a table cut short, whole: what to do is often at their end."""
    cut = [
        f"{name}: {outcome}: {error}"
        for name, outcome, error in outcomes
        if error and len(str(error)) > MAX_ERROR
    ]
    if not cut:
        return []
    shown = cut[:MAX_FULL_ERRORS]
    if len(cut) > len(shown):
        shown.append(f"... and {len(cut) - len(shown)} more: 'mirrord ctl --json status'")
    return ["", *shown]


def _tree_table(trees: Reply, now: float) -> list[str]:
    """The releases trees: one row per directory or top-level file."""
    state = "syncing" if trees.get("running") else f"every {duration(trees.get('interval') or 0)}"
    link = trees.get("latest_stable") or "-"
    lines = [f"releases trees ({state}); latest-stable -> {link}"]
    headers = ["TREE", "PUBLISHED", "LAG", "UNVERIFIED", "PENDING REMOVAL", "LAST"]
    rows = []
    for tree in trees.get("directories") or ():
        lag = tree.get("lag") or 0
        rows.append(
            [
                str(tree.get("directory") or "-"),
                _ago(tree.get("published_at"), now),
                duration(lag) if lag else "-",
                _count(tree.get("unverified")),
                _count(tree.get("pending_removal")),
                _last({"last_outcome": tree.get("outcome"), "last_error": tree.get("error")}),
            ]
        )
    if not rows:
        return [*lines, "  (no pass yet)"]
    right = {"UNVERIFIED", "PENDING REMOVAL"}
    return [*lines, *table(headers, rows, right={i for i, h in enumerate(headers) if h in right})]


def _syncing(sync: Reply) -> str:
    syncing = sync.get("syncing") or []
    text = _names(syncing) if syncing else "none"
    if sync.get("interval") is not None:
        text += f"; each arch polls every {duration(sync['interval'])}"
    return text


def progress_line(p: Reply) -> str:
    """One sync's downloads: files and bytes done of planned, rate, ETA."""
    text = (
        f"{p.get('arch', '?')}: {_count(p.get('done_files'))}/{_count(p.get('planned_files'))} "
        f"files, {_bytes(p.get('done_bytes'))} of {_bytes(p.get('planned_bytes'))}"
    )
    rate, eta = p.get("rate"), p.get("eta")
    text += f", {_bytes(rate)}/s" if isinstance(rate, int | float) else ", starting"
    if isinstance(eta, int | float):
        text += f", ETA {duration(eta)}"
    if p.get("failed_files"):
        text += f", {_count(p['failed_files'])} failed"
    return text


def downstream_lines(result: Reply, now: float) -> list[tuple[str, str]]:
    """(label, text) per downstream service configured: ``ctl status`` and the status page."""
    lines: list[tuple[str, str]] = []
    for key, label, line in (
        ("push", "push", _push),
        ("announce", "announce", _announce),
        ("purge", "cdn purge", _purge),
        ("bucket", "s3 bucket", _bucket),
    ):
        value = result.get(key)
        if isinstance(value, Mapping):
            lines.append((label, line(value, now)))
    return lines


def _bucket(bucket: Reply, now: float) -> str:
    behind: Mapping[str, float] = bucket.get("behind") or {}
    failed: Sequence[str] = bucket.get("failed") or ()
    text = f"s3://{bucket.get('bucket') or '?'}/{bucket.get('prefix') or ''} at "
    text += f"{bucket.get('endpoint') or '?'}: {_count(bucket.get('in_step'))} arches in step"
    if behind:
        text += f", {_count(len(behind))} behind (worst {duration(max(behind.values()))})"
    if failed:
        text += f", {_count(len(failed))} failing ({', '.join(failed)})"
    text += f", last pass {_ago(bucket.get('last_pass'), now)}"
    if bucket.get("last_failure"):
        at = _ago(bucket.get("last_failure_at"), now)
        text += f"; last failure {at}: {bucket['last_failure']}"
    return text


def _push(push: Reply, now: float) -> str:
    broker = push.get("broker") or "?"
    if push.get("connected"):
        text = f"connected to {broker} since {_ago(push.get('connected_since'), now)}"
    else:
        text = f"not connected to {broker} (retrying; polls keep the mirror fresh)"
    last = push.get("last_push")
    return text + f", {_count(push.get('messages'))} messages, last {_ago(last, now)}"


def _announce(announce: Reply, now: float) -> str:
    broker = announce.get("broker") or "?"
    text = f"to {broker} on {announce.get('topic_prefix') or '?'}/<branch>/<arch>, "
    if announce.get("connected"):
        text += f"connected since {_ago(announce.get('connected_since'), now)}"
    else:
        text += "not connected (retrying)"
    text += (
        f", {_count(announce.get('sent'))} sent, {_count(announce.get('failed'))} failed, "
        f"{_count(announce.get('pending'))} waiting, last {_ago(announce.get('last_sent'), now)}"
    )
    if announce.get("dropped"):
        text += f", {_count(announce['dropped'])} dropped"
    return text


def _purge(purge: Reply, now: float) -> str:
    text = (
        f"{_count(purge.get('purged'))} purged, {_count(purge.get('failed'))} failed "
        f"after {_count(purge.get('events'))} publishes, last {_ago(purge.get('last_purge'), now)}"
    )
    if purge.get("waiting"):
        text += f", {_count(purge['waiting'])} publishes waiting"
    if purge.get("dropped"):
        text += f", {_count(purge['dropped'])} dropped (backlog full)"
    if purge.get("last_failure"):
        text += f"; last failure {_ago(purge.get('last_failure_at'), now)}: {purge['last_failure']}"
    return text


def health_line(result: Reply) -> str | None:
    """What ``GET /health`` answers a load balancer, in a line (None from an older daemon)."""
    health = result.get("health")
    if not isinstance(health, Mapping):
        return None
    if health.get("healthy"):
        return "ok (GET /health answers 200)"
    reasons = health.get("reasons") or ["no reason given"]
    return "UNHEALTHY (GET /health answers 503): " + "; ".join(str(r) for r in reasons)


def fleet_line(result: Reply, now: float) -> str | None:
    """Fleet mode's state in a line (``ctl status`` and the status page); None when off."""
    fleet = result.get("fleet")
    if not isinstance(fleet, Mapping):
        return None
    members = fleet.get("members") or []
    text = f"node {fleet.get('node')}, etcd {fleet.get('etcd')} "
    text += "connected" if fleet.get("connected") else f"UNREACHABLE ({fleet.get('last_error')})"
    text += f", {_count(len(members))} members ({', '.join(str(m) for m in members)})"
    barriers: Mapping[str, object] = fleet.get("barriers") or {}
    if barriers:
        text += ", staged: " + ", ".join(f"{k} {_count(n)}" for k, n in barriers.items())
    left = fleet.get("last_left_out")
    if isinstance(left, Mapping):
        nodes = ", ".join(str(n) for n in left.get("nodes") or [])
        text += f"; last left out: {nodes} on {left.get('arch')} {_ago(left.get('at'), now)}"
    return text


def _background(background: Reply, now: float) -> str:
    failures: Mapping[str, object] = background.get("failures") or {}
    if not failures:
        return "no failures"
    total = sum(int(n) for n in failures.values() if isinstance(n, int))
    counts = ", ".join(f"{task} {_count(n)}" for task, n in failures.items())
    text = f"{_count(total)} failed ({counts})"
    last = background.get("last_failure")
    if isinstance(last, Mapping):
        text += (
            f"; last: {last.get('task')} {_ago(last.get('at'), now)}: "
            f"{shorten(str(last.get('error')))}"
        )
    return text


def _log(log: Reply) -> str:
    dropped = log.get("dropped")
    if not dropped:
        return "every line written"
    return f"{_count(dropped)} lines dropped: {shorten(str(log.get('trouble')))}"


def _verify(verify: Reply, now: float) -> str:
    if verify.get("started_at") is None and not verify.get("running"):
        return "never run since the daemon started"
    if verify.get("running"):
        text = "running" + (" with repair" if verify.get("repair") else "")
    else:
        text = f"done {_ago(verify.get('finished_at'), now)}"
    text += (
        f", {_count(verify.get('checked'))} of {_count(verify.get('total'))} objects, "
        f"{_count(verify.get('damaged'))} damaged"
    )
    if verify.get("missing"):
        text += f", {_count(verify['missing'])} missing"
    if verify.get("repaired"):
        text += f", {_count(verify['repaired'])} repaired"
    database = verify.get("database")
    if database not in (None, "ok"):
        text += f"; state.db damaged ({database}): stop mirrord and run 'mirrord recover'"
    return text


def _arch_table(arches: Sequence[Reply], now: float) -> list[str]:
    extra = [
        key
        for key in dict.fromkeys(k for arch in arches for k in arch)
        if key not in _ARCH_COLUMNS and key not in _ARCH_HIDDEN
    ]
    headers = ["ARCH", "STATE", "SNAPSHOT", "PACKAGES", "PUBLISHED", "LAG", "NEXT POLL"]
    headers += [key.upper().replace("_", " ") for key in extra] + ["LAST"]
    rows: list[list[str]] = []
    for arch in arches:
        snapshot = arch.get("snapshot")
        lag = arch.get("lag") or 0
        state = str(arch.get("state") or "-")
        if arch.get("rerun_queued"):
            state += " (+1 queued)"
        next_poll = arch.get("next_poll")
        row = [
            str(arch.get("arch", "?")),
            state,
            "-" if snapshot is None else str(snapshot),
            _count(arch.get("packages")),
            _ago(arch.get("published_at"), now),
            duration(lag) if lag else "-",
            "-" if next_poll is None or state != "idle" else _relative(next_poll, now),
        ]
        row += [_value(arch.get(key), now) for key in extra]
        rows.append([*row, _last(arch)])
    right = {"SNAPSHOT", "PACKAGES"}
    return table(headers, rows, right={i for i, h in enumerate(headers) if h in right})


def _last(arch: Reply) -> str:
    last = arch.get("last_outcome") or "-"
    error = arch.get("last_error")
    if error:
        last += f": {shorten(str(error))}"
    return last


# --- the other commands -------------------------------------------------------------


def _snapshots(result: Reply) -> tuple[str, Iterable[str]]:
    listed: Sequence[Reply] = result.get("snapshots", ())
    if "directory" in result:
        return _tree_snapshots(result, listed)
    if not listed:
        return f"{result.get('arch', '?')}: no snapshots remembered", ("arch", "snapshots")
    rows = []
    for s in listed:
        created = s.get("created_at")
        when = "-" if created is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))
        notes = [
            note
            for flag, note in (("current", "published now"), ("forced", "forced"))
            if s.get(flag)
        ]
        if s.get("description"):
            notes.append(str(s["description"]))
        rows.append(
            [
                str(s.get("id", "?")),
                when,
                str(s.get("status") or "-"),
                _count(s.get("packages")),
                _bytes(s.get("bytes")),
                str(s.get("index_sha256") or "-")[:12],
                "; ".join(notes),
            ]
        )
    headers = ["ID", "CREATED (UTC)", "STATUS", "PACKAGES", "SIZE", "INDEX", "NOTE"]
    arch = result.get("arch", "?")
    lines = [
        f"snapshots of {arch} (ids count across all arches; roll back with "
        f"'mirrord ctl rollback {arch} ID'):",
        *table(headers, rows, right={0, 3, 4}),
    ]
    return "\n".join(lines), ("arch", "snapshots")


def _when(created: object) -> str:
    if not isinstance(created, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))


def _tree_snapshots(result: Reply, listed: Sequence[Reply]) -> tuple[str, Iterable[str]]:
    directory = result.get("directory", "?")
    known = ("arch", "directory", "snapshots", "held")
    if not listed:
        return f"{directory}: no snapshots remembered", known
    rows = [
        [
            str(s.get("id", "?")),
            _when(s.get("created_at")),
            _count(s.get("files")),
            _bytes(s.get("bytes")),
            "; ".join(
                note
                for flag, note in (("current", "published now"), ("forced", "forced"))
                if s.get(flag)
            ),
        ]
        for s in listed
    ]
    held = " (held by a rollback)" if result.get("held") else ""
    lines = [
        f"snapshots of {directory}{held} (roll back with 'mirrord ctl rollback {directory} ID'):",
        *table(["ID", "CREATED (UTC)", "FILES", "SIZE", "NOTE"], rows, right={0, 2, 3}),
    ]
    return "\n".join(lines), known


_TRIGGERS = {
    "started": "syncing now",
    "queued": "syncing: one more sync follows this one",
    "already_queued": "syncing, and one more sync was already queued",
    "paused": "paused: it syncs on 'mirrord ctl resume'",
}


def _sync(result: Reply) -> tuple[str, Iterable[str]]:
    answers: Mapping[str, str] = result.get("arches") or {}
    if not answers:
        return "sync: nothing to start (every arch is held)", ("queued", "arches", "paused")
    groups: dict[str, list[str]] = {}
    for arch, answer in answers.items():
        groups.setdefault(answer, []).append(arch)
    lines = [
        f"sync: {_names(arches)}: {_TRIGGERS.get(answer, answer)}"
        for answer, arches in groups.items()
    ]
    return "\n".join(lines), ("queued", "arches", "paused")


def _pause(result: Reply) -> tuple[str, Iterable[str]]:
    return _paused_sentence(result), ("paused",)


def _resume(result: Reply) -> tuple[str, Iterable[str]]:
    if "released" in result:
        released = result["released"]
        return f"resume: released the hold on {_names(released)}; it syncs now", ("released",)
    return _paused_sentence(result), ("paused",)


def _paused_sentence(result: Reply) -> str:
    if result.get("paused"):
        return "paused: no new syncs or downloads start (arches are still polled, for lag)"
    return "resumed: syncs and downloads go on"


def _rate_reply(result: Reply) -> tuple[str, Iterable[str]]:
    return f"rate limit: {_rate(result)}", ("limit", "limit_text", "source", "kept_across_restarts")


def _rollback(result: Reply) -> tuple[str, Iterable[str]]:
    text = f"rolled back {result.get('arch', '?')} to snapshot {result.get('snapshot', '?')}"
    if result.get("note"):
        text += f"\n{result['note']}"
    return text, ("arch", "snapshot", "held", "note")


def _publish(result: Reply) -> tuple[str, Iterable[str]]:
    forced = str(result.get("forced", "?"))
    answer = (result.get("arches") or {}).get(forced, "started")
    return (
        f"publish: {forced} will be published once past the mass-deletion guard "
        f"({_TRIGGERS.get(answer, answer)})",
        ("forced", "queued", "arches", "paused"),
    )


_VERIFY_KEYS = (
    "running",
    "repair",
    "total",
    "checked",
    "damaged",
    "missing",
    "repaired",
    "started_at",
    "finished_at",
)


def _verify_started(result: Reply) -> tuple[str, Iterable[str]]:
    repair = " with repair (damaged objects are fetched again)" if result.get("repair") else ""
    return f"verify: started{repair}; 'mirrord ctl status' shows progress", _VERIFY_KEYS


def _gc(result: Reply) -> tuple[str, Iterable[str]]:
    objects = result.get("deleted_objects") or 0
    if objects:
        text = f"gc: deleted {_count(objects)} objects, freed {_bytes(result.get('freed_bytes'))}"
    else:
        text = "gc: nothing to delete"
    kept = [
        f"{_count(result[key])} {why}"
        for key, why in (
            ("kept_listed", "listed by kept snapshots (publish.keep_snapshots)"),
            ("kept_recent", f"stored less than publish.grace ({_grace(result)}) ago"),
            ("kept_in_use", "needed by syncs in progress"),
        )
        if result.get(key)
    ]
    if kept:
        text += "; kept " + ", ".join(kept)
    known = ("deleted_objects", "freed_bytes", "kept_listed", "kept_recent", "kept_in_use", "grace")
    return text, known


def _grace(result: Reply) -> str:
    grace = result.get("grace")
    return duration(grace) if isinstance(grace, int | float) else "?"


def _reload(result: Reply) -> tuple[str, Iterable[str]]:
    applied = result.get("applied") or []
    restart = result.get("needs_restart") or []
    restarted = result.get("restarted") or []
    if not applied and not restart and not restarted:
        text = "reload: nothing changed"
    else:
        text = f"reload: applied {_names(applied)}" if applied else "reload: applied nothing"
        if restarted:
            text += f"; restarted services: {_names(restarted)}"
        if restart:
            text += f"; needs a restart to apply: {_names(restart)}"
    return text, ("applied", "needs_restart", "restarted")


def _purge_reply(result: Reply) -> tuple[str, Iterable[str]]:
    results: Sequence[Reply] = result.get("results") or ()
    failed = sum(1 for r in results if r.get("error"))
    lines = [f"purge: {_count(len(results) - failed)} purged, {_count(failed)} failed"]
    for r in results:
        outcome = f"failed: {r['error']}" if r.get("error") else "purged"
        lines.append(f"  {r.get('target', '?'):<6}  {r.get('where', '?')}: {outcome}")
    return "\n".join(lines), ("paths", "results")


def _drain(result: Reply) -> tuple[str, Iterable[str]]:
    return "draining: finishing the syncs in progress, then stopping", ("draining", "note")


_RENDERERS: dict[str, Callable[[Reply], tuple[str, Iterable[str]]]] = {
    "snapshots": _snapshots,
    "sync": _sync,
    "pause": _pause,
    "resume": _resume,
    "rate": _rate_reply,
    "rollback": _rollback,
    "publish": _publish,
    "verify": _verify_started,
    "gc": _gc,
    "reload": _reload,
    "drain": _drain,
    "purge": _purge_reply,
}


# --- pieces ---------------------------------------------------------------------------


def _held_back(rate: Reply) -> list[tuple[str, str]]:
    held, rtt = rate.get("held_back"), rate.get("origin_rtt")
    if not (isinstance(held, Sequence) and len(held) == 2 and isinstance(rtt, int | float)):
        return []
    most, needed = held
    return [
        (
            "held back",
            f"at the origin's {rtt * 1000:.0f} ms round trip the receive windows carry at "
            f"most {_bytes(most)}/s; fetch.burst: {format_mib(int(needed))} would reach the limit",
        )
    ]


def _rate(rate: Reply) -> str:
    limit = rate.get("limit_text") or "unlimited"
    if rate.get("source") == "override":
        return f"{limit} (override, kept across restarts until 'mirrord ctl rate schedule')"
    return f"{limit} (from the configuration)"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Columns two spaces apart, as wide as their widest cell; the last is not padded."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def duration(seconds: float) -> str:
    """Like ``45s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def shorten(text: str, limit: int = MAX_ERROR) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ago(moment: float | None, now: float) -> str:
    return "never" if moment is None else f"{duration(now - moment)} ago"


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def _bytes(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_bytes(value)
    return "-"


def _names(names: Iterable[object]) -> str:
    listed = [str(name) for name in names]
    return ", ".join(listed) if listed else "none"


def _value(value: object, now: float) -> str:
    """Any reply value, for keys this version does not know."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and _EPOCH_RANGE[0] <= value < _EPOCH_RANGE[1]:
        return _relative(value, now)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_value(v, now)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_value(v, now) for v in value) or "-"
    return str(value)


# Numbers this large are Unix times (2001 to 2286): the replies carry times that way.
_EPOCH_RANGE = (1e9, 1e10)


def _relative(moment: float, now: float) -> str:
    return f"in {duration(moment - now)}" if moment > now else _ago(moment, now)


def _extras(result: Reply, known: Iterable[str], now: float) -> list[str]:
    skip = set(known)
    return [f"  {key}: {_value(value, now)}" for key, value in result.items() if key not in skip]
