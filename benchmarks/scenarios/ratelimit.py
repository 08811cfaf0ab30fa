"""Scenario 6: how closely ``fetch.rate_limit`` holds, seen on the loopback interface.

While mirrord syncs large files at a configured rate, a thread reads the
``lo`` receive counter of /proc/net/dev every second. Averages are taken over
the first full seconds of the transfer (the first and last, partial seconds
are left out); the largest single second is held against rate + burst.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import measure, mirrordrun
from benchmarks.context import Bench
from benchmarks.results import GoalCheck, ScenarioResult, Table, fmt, median
from benchmarks.scenarios.common import MAIN, Trial, completeness, retry_note, trial
from benchmarks.servers import LoggedNginx
from benchmarks.trees import LiveOrigin, warm

TOLERANCE = 0.05
ACTIVE = 0.10  # a second counts as part of the transfer above this share of the rate


@dataclass(frozen=True)
class RateReport:
    window_seconds: float
    window_rate: float  # bytes/s over the window
    peak_second: float  # bytes in the busiest one-second interval, per second
    peak_at: int  # which active second that was (0: the first)
    transfer_rate: float  # bytes/s over every active second
    active_seconds: int
    total: int  # loopback bytes from the first sample to the last
    seconds: tuple[float, ...] = ()  # bytes/s of each active interval, in order


def analyse(samples: Sequence[tuple[float, int]], rate: float, window: int) -> RateReport:
    """Per-second rates from cumulative (time, bytes) samples; pure."""
    intervals = [(t1 - t0, b1 - b0) for (t0, b0), (t1, b1) in itertools.pairwise(samples)]
    active = [i for i, (dt, db) in enumerate(intervals) if dt > 0 and db / dt >= ACTIVE * rate]
    total = samples[-1][1] - samples[0][1] if samples else 0
    if not active:
        return RateReport(0.0, 0.0, 0.0, 0, 0.0, 0, total)
    span = intervals[active[0] : active[-1] + 1]
    full = span[1:-1] if len(span) > 2 else span
    chosen = full[:window]
    seconds = sum(dt for dt, _ in chosen)
    rates = [db / dt if dt > 0 else 0.0 for dt, db in span]
    return RateReport(
        window_seconds=seconds,
        window_rate=sum(db for _, db in chosen) / seconds if seconds else 0.0,
        peak_second=max(rates),
        peak_at=rates.index(max(rates)),
        transfer_rate=sum(db for _, db in span) / sum(dt for dt, _ in span),
        active_seconds=len(span),
        total=total,
        seconds=tuple(rates),
    )


def rate_limit(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    dataset = bench.sets.large()
    directory = bench.scenario_dir("rate-limit")
    logs = directory / "logs"
    logs.mkdir()
    origin = LiveOrigin(directory / "origin", bench.sets.key)
    origin.publish({MAIN: dataset.packages})
    expected = origin.expected()
    warm(origin.root)
    reports: list[RateReport] = []
    trials: list[Trial] = []
    paces: list[float] = []  # payload bytes / mirrord's own seconds for the arch
    resent: list[int] = []  # TCP segments sent again during each run (the origin's, mostly)
    retries: list[str] = []
    with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:
        setup = mirrordrun.MirrordSetup(
            origin_url=nginx.url,
            keys=bench.sets.public_keys(),
            arches=(MAIN,),
            directory=directory / "mirrord",
            fetch=mirrordrun.default_fetch(
                sizes.fetch_concurrency, rate_limit=sizes.rate_limit, burst=sizes.burst
            ),
        )

        def run(_out: Path, rep: int) -> tuple[measure.Usage, Path, str]:
            resent_before = measure.tcp_retransmitted_segments()
            with measure.Periodic(measure.loopback_bytes, 1.0) as lo:
                result = mirrordrun.sync(setup, logs, f"mirrord-{rep}")
            resent.append(measure.tcp_retransmitted_segments() - resent_before)
            reports.append(analyse(lo.samples, sizes.rate_limit_bytes, sizes.rate_window))
            (done,) = result.named("sync.arch.done")
            paces.append(result.fetched_bytes / float(done["seconds"]))
            retries.extend(result.retries)
            return result.usage, setup.published, result.command

        for rep in range(bench.runs):
            trials.append(trial(run, setup.directory, rep, expected, nginx))
            bench.progress(
                f"rate-limit {rep + 1}/{bench.runs}: {reports[-1].window_rate / 1e6:.2f} MB/s"
            )
    rate, bound = sizes.rate_limit_bytes, sizes.rate_limit_bytes + sizes.burst_bytes
    window_rate = median([r.window_rate for r in reports])
    deviation = (window_rate - rate) / rate
    peak = median([r.peak_second for r in reports])
    window = median([r.window_seconds for r in reports])
    # loopback bytes per HTTP body byte in the same runs: TCP/IP and HTTP headers, ACKs
    overhead = median(
        [
            r.total / t.requests.body_bytes
            for r, t in zip(reports, trials, strict=True)
            if t.requests
        ]
    )
    payload_rate = window_rate / overhead
    payload_peak = peak / overhead
    payload_deviation = (payload_rate - rate) / rate
    rows = (
        ("configured rate MB/s (burst)", f"{rate / 1e6:.2f} ({sizes.burst})"),
        ("averaging window s", fmt(window, 1)),
        ("window average MB/s", fmt(window_rate / 1e6, 3)),
        ("deviation from the rate", f"{deviation * 100:+.2f}%"),
        ("largest 1 s interval MB/s", fmt(peak / 1e6, 3)),
        ("... at active second (each run)", " ".join(str(r.peak_at) for r in reports)),
        ("bound: rate + burst MB/s", fmt(bound / 1e6, 3)),
        ("whole-transfer average MB/s", fmt(median([r.transfer_rate for r in reports]) / 1e6, 3)),
        ("loopback bytes per HTTP body byte", fmt(overhead, 4)),
        ("window average, payload MB/s (window / that ratio)", fmt(payload_rate / 1e6, 3)),
        ("deviation, payload", f"{payload_deviation * 100:+.2f}%"),
        ("largest 1 s interval, payload MB/s (/ that ratio)", fmt(payload_peak / 1e6, 3)),
        ("mirrord's pace MB/s (fetched_bytes / arch seconds)", fmt(median(paces) / 1e6, 3)),
        ("TCP segments sent again (RetransSegs, each run)", " ".join(map(str, resent))),
        ("first seconds MB/s (run 1)", " ".join(f"{v / 1e6:.1f}" for v in reports[0].seconds[:8])),
        ("active seconds", fmt(median([float(r.active_seconds) for r in reports]), 0)),
        ("data MB", fmt(sum(expected.values()) / 1e6, 1)),
        ("wall s", fmt(median([t.usage.wall for t in trials]))),
        ("complete", completeness(trials)),
    )
    goals = (
        GoalCheck(
            f"rate within +/-{TOLERANCE * 100:.0f}%, loopback bytes ({window:.0f} s window)",
            f"{window_rate / 1e6:.3f} MB/s vs {rate / 1e6:.2f} MB/s ({deviation * 100:+.2f}%)",
            abs(deviation) <= TOLERANCE,
        ),
        GoalCheck(
            f"rate within +/-{TOLERANCE * 100:.0f}%, payload bytes (lo window / lo-per-body ratio)",
            f"{payload_rate / 1e6:.3f} MB/s ({payload_deviation * 100:+.2f}%)",
            abs(payload_deviation) <= TOLERANCE,
        ),
        GoalCheck(
            "largest 1 s interval within rate + burst, loopback bytes",
            f"{peak / 1e6:.3f} MB/s vs {bound / 1e6:.3f} MB/s",
            peak <= bound,
        ),
        GoalCheck(
            "largest 1 s interval within rate + burst, payload bytes",
            f"{payload_peak / 1e6:.3f} MB/s vs {bound / 1e6:.3f} MB/s",
            payload_peak <= bound,
        ),
    )
    return ScenarioResult(
        name="rate-limit",
        title="Rate-limit accuracy",
        summary=(
            f"mirrord syncs {len(dataset.packages)} files of "
            f"{sizes.large_file_bytes / 1e6:.0f} MB with `fetch.rate_limit: "
            f"{sizes.rate_limit}` and `burst: {sizes.burst}`. The `lo` receive counter of "
            "/proc/net/dev is read every second; it counts every loopback byte once, "
            "HTTP and TCP/IP headers included, and any other loopback traffic on the "
            f"machine. Medians of {bench.runs} run(s)."
        ),
        tables=(Table(("figure", "mirrord"), rows),),
        notes=(
            "The loopback counter sees HTTP and TCP/IP headers, ACKs and any segment sent "
            "twice as well as bodies; "
            "the payload rows divide by the ratio of loopback bytes to nginx's body bytes "
            "measured over the same run.",
            "TCP segments sent again: RetransSegs of /proc/net/snmp over each run (in the "
            "harness's network namespace, the machine's with --shared-loopback): the origin "
            "resending segments that a window too small for them left unacknowledged shows "
            "here first (HISTORY #44).",
            "mirrord's token bucket meters what it reads from its sockets; the kernel "
            "accepts data into each connection's receive buffer (net.ipv4.tcp_rmem) ahead "
            "of that, so the wire can run ahead of the bucket when connections open.",
            *retry_note(retries, bench.runs),
        ),
        commands=(trials[0].command, f"mirrord config:\n{(logs / 'mirrord-0.yaml').read_text()}"),
        goals=goals,
        figures={
            "mirrord": {
                "window_rate": window_rate,
                "peak_second": peak,
                "payload_peak": payload_peak,
            }
        },
    )
