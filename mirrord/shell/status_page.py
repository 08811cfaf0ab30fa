"""The status page: the status report as one self-contained HTML page for people.

Servers are often offline, so there is nothing external: inline CSS, no
script, a meta refresh. Every value from the report goes through
``html.escape`` (an origin's error message is not ours to trust). Lag is
coloured as on Alpine's mirror-status: OK under an hour, a warning under a
day, an error beyond.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape

from mirrord.core.model import ArchKey
from mirrord.core.units import format_bytes
from mirrord.shell.control.render import (
    downstream_lines,
    duration,
    fleet_line,
    health_line,
    shorten,
)
from mirrord.shell.status_report import ArchReport, ProgressReport, StatusReport, TreesReport

REFRESH_SECONDS = 10
LAG_WARNING = 3600.0
LAG_ERROR = 86400.0
MAX_ERROR = 160  # characters of an error in the table; the full text is its tooltip

Cell = tuple[str, str]  # (HTML, already escaped; CSS class)

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2327; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h1 small { font-weight: normal; color: #646970; font-size: .7em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.facts { display: flex; flex-wrap: wrap; gap: .3em 2em; margin: .5em 0; }
.facts div span { color: #646970; margin-right: .4em; }
.badge { padding: .1em .6em; border-radius: 1em; font-size: .75em; vertical-align: middle; }
table { border-collapse: collapse; width: 100%; }
table.progress { width: auto; min-width: 60%; }
th, td { padding: .35em .6em; border-bottom: 1px solid #dcdcde; text-align: left;
  vertical-align: top; }
th { background: #f6f7f7; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.when { white-space: nowrap; font-variant-numeric: tabular-nums; }
.dim { color: #646970; }
.ok { background: #d7f5dd; color: #0a5c1a; }
.warning { background: #fcf0c3; color: #6b4e00; }
.error { background: #fbd9d9; color: #8a1414; }
.state-syncing { color: #0a4b78; font-weight: 600; }
.state-held, .state-paused { color: #6b4e00; font-weight: 600; }
.outcome-failed, .outcome-refused { color: #8a1414; font-weight: 600; }
.message { color: #8a1414; font-size: .9em; word-break: break-word; max-width: 40em; }
.bar { width: 12em; height: .8em; background: #dcdcde; border-radius: .4em; overflow: hidden; }
.bar div { height: 100%; background: #2271b1; }
footer { margin-top: 1.5em; color: #646970; font-size: .85em; }
"""


def render_status_page(report: StatusReport, now: float) -> str:
    """The whole page; ``now`` is wall time, for "ago" and "in"."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mirrord: {_e(_headline(report))}</title>",
        f"<style>{_CSS}</style></head><body>",
        *_header(report, now),
        *_progress(report["sync"]["progress"]),
        "<h2>Repositories</h2>",
        *_arch_table(report["arches"], now),
        *_trees(report["trees"], now),
        *_downstream(report, now),
        *_fleet(report, now),
        *_health(report),
        f"<footer>mirrord {_e(report['version'])}, pid {_e(report['pid'])}; "
        f"as of {_e(_utc(now))}, refreshed every {REFRESH_SECONDS} s; "
        'the same facts as JSON: <a href="status.json">status.json</a>, '
        'metrics: <a href="metrics">/metrics</a></footer>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _headline(report: StatusReport) -> str:
    arches = report["arches"]
    current = sum(1 for arch in arches if arch["lag"] == 0)
    return f"{current}/{len(arches)} current"


def _header(report: StatusReport, now: float) -> list[str]:
    if report["draining"]:
        state, tone = "draining: finishing the syncs in progress, then stopping", "warning"
    elif report["paused"]:
        state, tone = "paused: no sync starts until 'mirrord ctl resume'", "warning"
    else:
        state, tone = "running", "ok"
    arches = report["arches"]
    failing = sum(1 for arch in arches if arch["last_error"])
    summary = f"{_headline(report)}, {len(report['sync']['syncing'])} syncing"
    if failing:
        summary += f", {failing} failing"
    rate, downloads, store = report["rate"], report["downloads"], report["store"]
    source = "override" if rate["source"] == "override" else "configured"
    facts = [
        ("arches", summary),
        ("rate limit", f"{rate['limit_text']} ({source})"),
        ("measured", f"{format_bytes(rate['measured'])}/s"),
        ("downloads", f"{downloads['in_flight']} in flight, {downloads['queued']} queued"),
        ("store", f"{store['objects']:,} objects, {format_bytes(store['bytes'])}"),
        ("poll interval", duration(report["sync"]["interval"])),
        ("uptime", duration(report["uptime"])),
    ]
    log = report["log"]
    if log["dropped"]:  # with the log gone, this page is one of the ways left to see the daemon
        facts.append(("log", f"{log['dropped']:,} lines dropped: {log['trouble']}"))
    return [
        f'<h1>mirrord <small>{_e(_utc(now))}</small> <span class="badge {tone}" '
        f'id="daemon-state">{_e(state)}</span></h1>',
        '<div class="facts">',
        *(f"<div><span>{_e(label)}</span><b>{_e(text)}</b></div>" for label, text in facts),
        "</div>",
    ]


def _progress(progress: list[ProgressReport]) -> list[str]:
    if not progress:
        return []
    rows = []
    for sync in progress:
        planned_bytes = sync["planned_bytes"]
        share = sync["done_bytes"] / planned_bytes if planned_bytes else 1.0
        rate, eta = sync["rate"], sync["eta"]
        failed = f", {sync['failed_files']:,} failed" if sync["failed_files"] else ""
        bar = f'<div class="bar" title="{share:.0%}"><div style="width: {share:.1%}"></div></div>'
        rows.append(
            [
                (_e(sync["arch"]), ""),
                (bar, ""),
                (_e(f"{sync['done_files']:,} of {sync['planned_files']:,}{failed}"), "num"),
                (_e(f"{format_bytes(sync['done_bytes'])} of {format_bytes(planned_bytes)}"), "num"),
                (_e("-" if rate is None else f"{format_bytes(rate)}/s"), "num"),
                (_e("-" if eta is None else duration(eta)), "num"),
            ]
        )
    headers = ["Syncing", "Progress", "Files", "Bytes", "Rate", "ETA"]
    right = {"Files", "Bytes", "Rate", "ETA"}
    return ["<h2>Downloads in progress</h2>", *_table("progress", headers, rows, right=right)]


def _arch_table(arches: list[ArchReport], now: float) -> list[str]:
    headers = ["Branch", "Repo", "Arch", "State", "Snapshot", "Packages"]
    headers += ["Origin Last-Modified", "Published Last-Modified", "Lag", "Last sync", "Next poll"]
    rows = [_arch_row(arch, now) for arch in arches]
    return _table("arches", headers, rows, right={"Snapshot", "Packages"})


def _arch_row(arch: ArchReport, now: float) -> list[Cell]:
    branch, repo, name = ArchKey.parse(arch["arch"]).parts
    state = arch["state"]
    state_text = f'<span class="state-{_e(state)}">{_e(state)}</span>'
    if arch["rerun_queued"]:
        state_text += ' <span class="dim">+1 queued</span>'
    snapshot = arch["snapshot"]
    lag = arch["lag"]
    tone = "ok" if lag < LAG_WARNING else "warning" if lag < LAG_ERROR else "error"
    lag_text = "current" if lag == 0 else duration(lag)
    last = arch["last_outcome"] or "never synced"
    last_text = f'<span class="outcome-{_e(last)}">{_e(last)}</span>'
    if arch["last_success"] is not None:
        last_text += f' <span class="dim">(ok {_e(_relative(arch["last_success"], now))})</span>'
    last_text += _message(arch["last_error"])
    next_poll = arch["next_poll"]
    return [
        (_e(branch), ""),
        (_e(repo), ""),
        (f"<b>{_e(name)}</b>", "arch"),
        (state_text, "state"),
        (_e("-" if snapshot is None else snapshot), "num"),
        (_e(f"{arch['packages']:,}"), "num packages"),
        _when(arch["origin_last_modified"], now),
        _when(arch["published_last_modified"], now),
        (_e(lag_text), f"lag {tone}"),
        (last_text, "last"),
        (_e("-" if next_poll is None or state == "syncing" else _relative(next_poll, now)), "when"),
    ]


def _trees(trees: TreesReport | None, now: float) -> list[str]:
    """The releases trees (when configured): one row per directory or top-level file."""
    if trees is None:
        return []
    state = "a pass is running" if trees["running"] else f"every {duration(trees['interval'])}"
    link = trees["latest_stable"] or "-"
    headers = ["Tree", "Published", "Lag", "Unverified", "Pending removal", "Last"]
    rows: list[list[Cell]] = []
    for tree in trees["directories"]:
        lag = tree["lag"]
        tone = "ok" if lag < LAG_WARNING else "warning" if lag < LAG_ERROR else "error"
        last = tree["outcome"] or "never synced"
        last_text = f'<span class="outcome-{_e(last)}">{_e(last)}</span>' + _message(tree["error"])
        rows.append(
            [
                (f"<b>{_e(tree['directory'])}</b>", "tree"),
                _when(tree["published_at"], now),
                (_e("current" if lag == 0 else duration(lag)), f"lag {tone}"),
                (_e(f"{tree['unverified']:,}"), "num"),
                (_e(f"{tree['pending_removal']:,}"), "num"),
                (last_text, "last"),
            ]
        )
    return [
        f"<h2>Releases trees</h2><p>{_e(state)}; latest-stable &rarr; {_e(link)}</p>",
        *_table("trees", headers, rows, right={"Unverified", "Pending removal"}),
    ]


def _downstream(report: StatusReport, now: float) -> list[str]:
    """The services that tell others (when configured), in ``ctl status``'s words."""
    lines = downstream_lines(report, now)
    if not lines:
        return []
    tones = {
        "push": _link_tone(report["push"]),
        "announce": _link_tone(report["announce"]),
        "cdn purge": "warning" if (report["purge"] or {}).get("failed") else "ok",
        "s3 bucket": _bucket_tone(report["bucket"]),
    }
    rows = [[(f"<b>{_e(label)}</b>", "service"), (_e(text), tones[label])] for label, text in lines]
    return ["<h2>Downstream</h2>", *_table("downstream", ["Service", "State"], rows, right=set())]


def _fleet(report: StatusReport, now: float) -> list[str]:
    """Fleet mode (when configured): one row, in ``ctl status``'s words."""
    line = fleet_line(report, now)
    fleet = report["fleet"]
    if line is None or fleet is None:
        return []
    tone = "ok"
    if not fleet.get("connected"):
        tone = "error"
    elif fleet.get("last_left_out"):
        tone = "warning"
    row = [(f"<b>{_e(fleet.get('node'))}</b>", "service"), (_e(line), tone)]
    return ["<h2>Fleet</h2>", *_table("fleet", ["Node", "State"], [row], right=set())]


def _health(report: StatusReport) -> list[str]:
    """What GET /health answers a load balancer, in ``ctl status``'s words."""
    line = health_line(report)
    health = report["health"]
    if line is None or health is None:
        return []
    tone = "ok" if health.get("healthy") else "error"
    row = [('<b><a href="health">/health</a></b>', "service"), (_e(line), tone)]
    return ["<h2>Health</h2>", *_table("health", ["Endpoint", "Answer"], [row], right=set())]


def _link_tone(link: dict[str, object] | None) -> str:
    return "ok" if link and link.get("connected") else "error"


def _bucket_tone(bucket: dict[str, object] | None) -> str:
    if not bucket or bucket.get("failed"):
        return "error"
    return "warning" if bucket.get("behind") else "ok"


def _message(error: str | None) -> str:
    """An error under the outcome: shortened, the whole of it on hover."""
    if not error:
        return ""
    return f'<div class="message" title="{_e(error)}">{_e(shorten(error, MAX_ERROR))}</div>'


def _table(
    name: str, headers: list[str], rows: Iterable[list[Cell]], *, right: set[str]
) -> list[str]:
    """``right``: the headers of numeric columns (aligned with their numbers)."""
    lines = [f'<table class="{name}"><thead><tr>']
    lines += [
        f'<th class="num">{_e(header)}</th>' if header in right else f"<th>{_e(header)}</th>"
        for header in headers
    ]
    lines.append("</tr></thead><tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="{css}">{html}</td>' if css else f"<td>{html}</td>" for html, css in row
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return lines


def _when(moment: float | None, now: float) -> Cell:
    if moment is None:
        return ('<span class="dim">-</span>', "when")
    return (f'<span title="{_e(_relative(moment, now))}">{_e(_utc(moment))}</span>', "when")


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def _relative(moment: float, now: float) -> str:
    return f"in {duration(moment - now)}" if moment > now else f"{duration(now - moment)} ago"


def _e(value: object) -> str:
    return escape(str(value), quote=True)
