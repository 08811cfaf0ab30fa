"""A full sync from a distant origin: mirrord against wget2, a sequential mirror and rsync.

The same nginx and rsync daemon as the loopback scenarios, each reached
through benchmarks/delayproxy.py (a round trip and a per-connection rate),
once per round-trip time. The "10x a sequential mirror" goal is judged here:
on loopback there is no round trip to hide.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.context import Bench
from benchmarks.data import DataSet
from benchmarks.linkcheck import Observed, observe
from benchmarks.mirrordrun import read_events
from benchmarks.peers import HTTP_PEERS, SEQUENTIAL, Transfer, rsync
from benchmarks.results import MISSING, GoalCheck, ScenarioResult, Table, fmt, median, ratio
from benchmarks.scenarios.common import (
    MAIN,
    VERIFIES,
    Runner,
    Trial,
    peer_runner,
    slug,
    trial,
)
from benchmarks.scenarios.fullsync import (
    MIRRORD,
    WGET2,
    Comparison,
    figures_of,
    mirrord_runner,
    peer_argv,
    serve,
    speed_goals,
    table_of,
)
from benchmarks.servers import DelayProxy, LoggedNginx, RsyncDaemon
from benchmarks.trees import INDEX_NAME

NAME = "wan"
ARCH_DIR = "/".join(MAIN.parts)
RSYNC = "rsync -a"
PROBE_SECONDS = 3  # long enough that slow start is a small part of the probe download
PEERS = tuple(p for p in HTTP_PEERS if p.name in (WGET2, SEQUENTIAL))
NETWORK_MODEL = (
    "Network model: this kernel has no netem and no fq (CONFIG_NET_SCH_NETEM and _FQ are "
    "off), so nginx and the rsync daemon are each reached through benchmarks/delayproxy.py, "
    "a user-space TCP proxy on 127.0.0.1. Per connection and direction it serialises the "
    "bytes at the cap (the sender is held back by TCP flow control) and delivers each "
    "chunk RTT/2 after it left that bottleneck, in order, with many chunks in flight; a "
    "new connection carries nothing for one RTT (the handshake). So every request/response "
    "exchange pays one RTT and every connection at most the cap: 16 connections get 16 "
    "caps, as from a distant origin whose per-flow rate is its window over the round trip. "
    "Not modelled: TCP slow start (a connection has the cap from its first byte; this "
    "favours the tools that open many connections only slightly, since each opens them "
    "once), loss, jitter, a bottleneck shared by the connections (an access link would cap "
    "the sum), TLS, DNS. The proxy runs on the same 2 cores (about the same CPU per byte "
    "for every tool)."
)


@dataclass(frozen=True)
class Link:
    rtt_ms: float
    rate_mbit: float  # per connection

    @property
    def label(self) -> str:
        return f"RTT {self.rtt_ms:g} ms, {self.rate_mbit:g} Mbit/s per connection"


@dataclass(frozen=True)
class LinkRun:
    link: Link
    observed: Observed
    comparison: Comparison
    passes: tuple[float, ...]  # mirrord's own sync.arch.done seconds, each run


def _links(bench: Bench) -> tuple[Link, ...]:
    s = bench.sizes
    return tuple(Link(float(rtt), float(s.wan_rate_mbit)) for rtt in s.wan_rtts_ms)


def _rsync_runner(url: str, logs: Path) -> Runner:
    def argv(out: Path, _inputs: Path) -> list[str]:
        (out / ARCH_DIR).parent.mkdir(parents=True, exist_ok=True)
        return rsync(url, ARCH_DIR, out)

    return peer_runner(argv, logs, "rsync")


def _probe(root: Path, link: Link) -> str:
    """A file of PROBE_SECONDS at the cap, outside the arch (no tool mirrors it); its path."""
    name = f"probe-{link.rate_mbit:g}mbit.bin"
    path = root / name
    if not path.exists():
        path.write_bytes(bytes(int(link.rate_mbit * 1e6 / 8 * PROBE_SECONDS)))
    return f"/{name}"


def _proxy(link: Link, target: int, log: Path) -> DelayProxy:
    return DelayProxy(target, link.rtt_ms, link.rate_mbit, log)


def _alternate(
    bench: Bench,
    tag: str,
    runners: Mapping[str, Runner],
    out: Path,
    expected: Mapping[str, int],
    nginx: LoggedNginx,
) -> dict[str, list[Trial]]:
    """Each tool once per run, in turn; requests counted at nginx (rsync's: not HTTP)."""
    trials: dict[str, list[Trial]] = {tool: [] for tool in runners}
    for rep in range(bench.runs):
        for tool, runner in runners.items():
            result = trial(runner, out, rep, expected, None if tool == RSYNC else nginx)
            trials[tool].append(result)
            bench.progress(f"{NAME} {tag} {rep + 1}/{bench.runs} {tool}: {result.usage.wall:.2f} s")
    return trials


def _measure(bench: Bench, dataset: DataSet) -> list[LinkRun]:
    served = serve(bench, NAME, dataset)
    installed = {MIRRORD: True, **{p.name: p.installed() for p in PEERS}}
    installed[RSYNC] = shutil.which("rsync") is not None
    done: list[LinkRun] = []
    with ExitStack() as origins:
        nginx = origins.enter_context(
            LoggedNginx(served.origin.root, served.directory / "nginx", workers=2)
        )
        daemon = (
            origins.enter_context(RsyncDaemon(served.origin.root, served.directory / "rsyncd"))
            if installed[RSYNC]
            else None
        )
        for link in _links(bench):
            tag = f"rtt{link.rtt_ms:g}"
            with ExitStack() as proxies:
                http = proxies.enter_context(
                    _proxy(link, nginx.port, served.logs / f"{tag}-nginx.log")
                )
                index = f"/{ARCH_DIR}/{INDEX_NAME}"
                observed = observe(http.port, index, _probe(served.origin.root, link))
                bench.progress(
                    f"{NAME} {link.label}: GET round trip {observed.round_trip_ms:.1f} ms, "
                    f"one download {observed.download_mbit:.1f} Mbit/s"
                )
                url = f"http://127.0.0.1:{http.port}"
                retries: list[str] = []
                runners: dict[str, Runner] = {
                    MIRRORD: mirrord_runner(bench, url, served.logs / tag, retries)
                }
                transfer = Transfer(url, tuple(served.expected), (ARCH_DIR,))
                for peer in PEERS:
                    if installed[peer.name]:
                        argv = peer_argv(peer, transfer)
                        runners[peer.name] = peer_runner(argv, served.logs / tag, slug(peer.name))
                if daemon is not None:
                    far = proxies.enter_context(
                        _proxy(link, daemon.port, served.logs / f"{tag}-rsyncd.log")
                    )
                    rsync_url = f"rsync://127.0.0.1:{far.port}/{daemon.module}"
                    runners[RSYNC] = _rsync_runner(rsync_url, served.logs / tag)
                trials = _alternate(
                    bench, tag, runners, served.directory / "out", served.expected, nginx
                )
            comparison = Comparison(
                trials,
                installed,
                len(served.expected),
                sum(served.expected.values()),
                tuple(t[0].command for t in trials.values() if t),
                (served.logs / tag / "mirrord-0.yaml").read_text(),
                tuple(retries),
            )
            passes = tuple(
                float(event["seconds"])
                for rep in range(bench.runs)
                for event in read_events(served.logs / tag / f"mirrord-{rep}.out")
                if event.get("event") == "sync.arch.done"
            )
            done.append(LinkRun(link, observed, comparison, passes))
    return done


def _network_table(runs: list[LinkRun]) -> Table:
    rows = tuple(
        (
            r.link.label,
            fmt(r.link.rtt_ms, 1),
            fmt(r.observed.round_trip_ms, 1),
            fmt(r.observed.first_ms, 1),
            fmt(r.link.rate_mbit, 1),
            fmt(r.observed.download_mbit, 1),
        )
        for r in runs
    )
    return Table(
        (
            "link",
            "RTT ms (set)",
            "small GET on an open connection, ms (median of 9)",
            "first GET on a new connection, ms (2 RTT)",
            "cap Mbit/s per connection (set)",
            f"one {PROBE_SECONDS} s GET over one connection, Mbit/s",
        ),
        rows,
        caption="The link as set and as measured through it (Python http.client)",
    )


def _daemon_table(runs: list[LinkRun]) -> Table:
    """mirrord's pass alone (what a running daemon pays) against the sequential mirror."""
    rows = []
    for r in runs:
        figures = figures_of(r.comparison)
        mine, sequential = figures.get(MIRRORD), figures.get(SEQUENTIAL)
        alone = median(r.passes)
        rows.append(
            (
                r.link.label,
                fmt(mine["wall"]) if mine else MISSING,
                fmt(alone),
                fmt(sequential["wall"]) if sequential else MISSING,
                ratio(sequential["wall"], mine["wall"]) if sequential and mine else MISSING,
                ratio(sequential["wall"], alone) if sequential else MISSING,
            )
        )
    return Table(
        (
            "link",
            "mirrord wall s",
            "mirrord's pass alone, s (sync.arch.done)",
            f"{SEQUENTIAL} wall s",
            "ratio, wall",
            "ratio, pass alone",
        ),
        tuple(rows),
        caption="mirrord's one-shot process against its pass alone, as a running daemon pays it",
    )


def wan(bench: Bench) -> ScenarioResult:
    dataset = bench.sets.wan()
    largest = max(p.size for p in dataset.packages)
    limit = bench.sizes.wan_max_size
    summary = (
        f"Full sync of the wan set into empty storage: {len(dataset.packages):,} packages "
        f"sampled over the real size distribution"
        f"{f' up to {limit / 1e6:g} MB' if limit else ''} + the index, "
        f"{dataset.total_bytes / 1e6:,.1f} MB, {dataset.total_bytes / largest:.0f}x its "
        "largest file (the real v3.16 main/x86_64 index: 3.4 GB, 26x its largest, 130 MB; "
        "with each connection capped, that ratio bounds what parallel connections gain). "
        "One arch, from nginx (2 workers) and an rsync daemon over the same tree, each "
        f"behind the delay proxy, at each of "
        f"{', '.join(f'{rtt} ms' for rtt in bench.sizes.wan_rtts_ms)} RTT with "
        f"{bench.sizes.wan_rate_mbit} Mbit/s per connection. Medians of {bench.runs} "
        "alternating run(s)."
    )
    runs = _measure(bench, dataset)
    tables: list[Table] = [_network_table(runs), _daemon_table(runs)]
    goals: list[GoalCheck] = []
    figures: dict[str, dict[str, float]] = {}
    for r in runs:
        found = figures_of(r.comparison)
        tables.append(replace(table_of(r.comparison, found), caption=r.link.label))
        goals.extend(speed_goals(found, f"WAN, {r.link.label}"))
        for tool, values in found.items():
            figures[f"{tool} @ {r.link.rtt_ms:g} ms"] = values
    retries = [e for r in runs for e in r.comparison.retries]
    return ScenarioResult(
        name=NAME,
        title="Full sync over a WAN link",
        summary=summary,
        tables=tuple(tables),
        notes=(
            NETWORK_MODEL,
            VERIFIES,
            f"mirrord: fetch.concurrency {bench.sizes.fetch_concurrency}, per_host 16 "
            "(16 connections, like wget2's 16 threads), pipeline 4 (the defaults: up to 4 "
            f"requests in flight on each connection); {SEQUENTIAL} (seqmirror.py) and "
            "rsync use one connection each, so the per-connection cap binds them hardest: "
            "that is what a distant origin does to a one-connection mirror.",
            "HTTP requests are counted from nginx's access log; rsync's n/a (not HTTP).",
            *(
                [f"mirrord logged {len(retries)} fetch.package.retry event(s): {retries[0]}"]
                if retries
                else []
            ),
        ),
        commands=(
            *runs[0].comparison.commands,
            f"mirrord config:\n{runs[0].comparison.config}",
        ),
        goals=tuple(goals),
        figures=figures,
    )
