"""Sync never starves serving: nginx under wrk, with mirrord idle and with mirrord syncing.

The tree mirrord published is served by nginx with config/nginx-mirrord.conf
(2 workers) and loaded by wrk with a request mix a CDN origin sees (mostly
packages of the real size distribution, some index and listing requests).
Three conditions alternate: mirrord idle; mirrord running full syncs back
to back into fresh storage (same disk) from a second nginx, the origin; and
the same syncs with the shipped unit's process priorities (``Nice=10``,
best-effort I/O at priority 7), which is as far as a machine without a
systemd manager can apply the unit (``CPUWeight``/``IOWeight`` need its cgroups).

``serving`` drives nginx at its capacity (each connection sends its next
request as soon as the last one is answered), where any CPU mirrord takes is
CPU nginx and wrk lose. ``serving-paced`` offers a fixed load well below
capacity instead, as a CDN origin sees it: each connection waits a random,
exponentially distributed time between requests (Poisson arrivals), so the
figure that matters is the latency a request sees while mirrord syncs.
"""

from __future__ import annotations

import dataclasses
import email.utils
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import mirrordrun
from benchmarks.context import Bench
from benchmarks.results import GoalCheck, ScenarioResult, Table, fmt, median
from benchmarks.scenarios.common import MAIN, slug
from benchmarks.servers import LoggedNginx
from benchmarks.trees import LiveOrigin, fresh, remove, warm
from tests.nginx import system_binary
from tests.serving import ShippedNginx

IDLE = "mirrord idle"
SYNCING = "mirrord syncing"
PRIORITY = "syncing, unit priorities"
LIMITED = "same, rate_limit 50MB/s"
SHIPPED = "same, worker_cpu: idle"
MODES = (IDLE, SYNCING, PRIORITY, LIMITED, SHIPPED)
RATE_LIMIT = "50MB/s"
ORIGIN_NICE = 19  # the example configuration's daytime limit
# What systemd/mirrord.service sets with Nice= and IOSchedulingClass=/IOSchedulingPriority=.
UNIT_PRIORITY = ("nice", "-n", "10", "ionice", "-c", "2", "-n", "7")
WRK_THREADS = 2
WRK_CONNECTIONS = 32
# Mean think time per connection for serving-paced: 32 connections / 16 ms is at most
# 2,000 requests/s offered, about half of what nginx answers here when driven flat out.
PACED_MEAN_DELAY_MS = 16
# Longer than one full sync at RATE_LIMIT (about 27 s for the release set), so
# every loaded window covers each phase of a sync, not whichever it happens to catch.
SECONDS_FULL = 40
SECONDS_QUICK = 2

# 85 % packages (uniformly over the set: the real size distribution), 10 % the
# index (half of them revalidations that get a 304), 5 % the directory listing.
WRK_SCRIPT = """
local packages, index, listing = {}, nil, nil
local since = nil
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

init = function(args)
  for line in io.lines(args[1]) do
    if line:match("APKINDEX%.tar%.gz$") then index = line
    elseif line:match("/$") then listing = line
    else packages[#packages + 1] = line end
  end
  since = args[2]
  math.randomseed(tonumber(args[3]) * 100 + (tid or 0))
end

request = function()
  local r = math.random(100)
  if r <= 85 then
    return wrk.format("GET", packages[math.random(#packages)])
  elseif r <= 90 then
    return wrk.format("GET", index)
  elseif r <= 95 then
    return wrk.format("GET", index, { ["If-Modified-Since"] = since })
  end
  return wrk.format("GET", listing)
end
"""

# wrk calls delay() before each request: the milliseconds to wait before sending it.
PACED_DELAY = """
delay = function()
  return -math.log(1 - math.random()) * %d
end
"""


@dataclass(frozen=True)
class Load:
    requests_per_s: float
    mb_per_s: float  # 10^6 bytes
    p50_ms: float
    p99_ms: float
    errors: int
    load_average: float = 0.0  # the machine's 1-minute load average as the window ended


@dataclass
class Syncs:
    """mirrord's full syncs during one loaded window."""

    runs: int = 0
    cpu: float = 0.0
    wall: float = 0.0
    fetched_bytes: int = 0
    commands: list[str] = field(default_factory=list)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    """wrk --latency's report: requests/s, transfer/s, the 50th and 99th percentiles."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    transfer = re.search(r"^Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", output, re.MULTILINE)
    if rate is None or transfer is None or set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's report:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        requests_per_s=float(rate.group(1)),
        mb_per_s=float(transfer.group(1)) * _BYTES[transfer.group(2)] / 1e6,
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
    )


def wrk_argv(url: str, script: Path, paths: Path, since: str, seconds: int, seed: int) -> list[str]:
    return [
        system_binary("wrk"),
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(paths),
        since,
        str(seed),
    ]


def _sync_until(
    stop: threading.Event, setup: mirrordrun.MirrordSetup, logs: Path, prefix: Sequence[str]
) -> Syncs:
    syncs = Syncs()
    while not stop.is_set():
        fresh(setup.directory)
        run = mirrordrun.sync(setup, logs, f"sync-{syncs.runs}", prefix=prefix)
        syncs.runs += 1
        syncs.cpu += run.usage.cpu
        syncs.wall += run.usage.wall
        syncs.fetched_bytes += run.fetched_bytes
        if not syncs.commands:
            syncs.commands.append(run.command)
    remove(setup.directory)
    return syncs


def _loaded(
    argv: list[str], setup: mirrordrun.MirrordSetup | None, logs: Path, prefix: Sequence[str]
) -> tuple[Load, Syncs]:
    stop = threading.Event()
    result: list[Syncs] = []
    thread = None
    if setup is not None:
        thread = threading.Thread(
            target=lambda: result.append(_sync_until(stop, setup, logs, prefix)), daemon=True
        )
        thread.start()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    finally:
        stop.set()
        if thread is not None:
            thread.join()
    load = dataclasses.replace(parse_wrk(done.stdout), load_average=os.getloadavg()[0])
    return load, result[0] if result else Syncs()


def serving(bench: Bench) -> ScenarioResult:
    return _serving(bench, paced=False)


def serving_paced(bench: Bench) -> ScenarioResult:
    return _serving(bench, paced=True)


def _serving(bench: Bench, *, paced: bool) -> ScenarioResult:
    name = "serving-paced" if paced else "serving"
    quick = bench.sizes.release_max_size is not None
    seconds = SECONDS_QUICK if quick else SECONDS_FULL
    directory = bench.scenario_dir(name)
    logs = directory / "logs"
    logs.mkdir()
    dataset = bench.sets.release()
    origin = LiveOrigin(directory / "origin", bench.sets.key)
    origin.publish({MAIN: dataset.packages})
    warm(origin.root)
    loads: dict[str, list[Load]] = {mode: [] for mode in MODES}
    syncs: dict[str, list[Syncs]] = {mode: [] for mode in MODES}
    fetch = mirrordrun.default_fetch(bench.sizes.fetch_concurrency)
    # The origin is another machine on a real T1: its CPU must not count against serving.
    # Started nice (its workers inherit it): reading nginx.pid once the port listened raced
    # nginx writing it (the smoke test once read an empty file).
    origin_nginx = LoggedNginx(origin.root, directory / "origin-nginx", niceness=ORIGIN_NICE)
    with origin_nginx as upstream:
        served = mirrordrun.MirrordSetup(
            upstream.url, bench.sets.public_keys(), (MAIN,), directory / "served", fetch
        )
        mirrordrun.sync(served, logs, "served")
        arch = "/" + "/".join(MAIN.parts)
        index = served.published.joinpath(*MAIN.parts, "APKINDEX.tar.gz")
        paths = logs / "paths.txt"
        names = [f"{arch}/{p.filename}" for p in dataset.packages]
        paths.write_text("\n".join([*names, f"{arch}/APKINDEX.tar.gz", f"{arch}/"]) + "\n")
        script = logs / "mix.lua"
        script.write_text(WRK_SCRIPT + (PACED_DELAY % PACED_MEAN_DELAY_MS if paced else ""))
        warm(served.published)
        syncing = mirrordrun.MirrordSetup(
            upstream.url, bench.sets.public_keys(), (MAIN,), directory / "syncing", fetch
        )
        limited = dataclasses.replace(syncing, fetch={**fetch, "rate_limit": RATE_LIMIT})
        # config/mirrord.example.yaml: the daytime limit, and fetch workers under SCHED_IDLE
        shipped = dataclasses.replace(
            syncing, fetch={**fetch, "rate_limit": RATE_LIMIT, "worker_cpu": "idle"}
        )
        with ShippedNginx(served.published, directory / "nginx", workers=2) as nginx:
            since = _http_date(index.stat().st_mtime)
            argv: list[str] = []
            for rep in range(bench.runs):
                for mode in MODES:
                    argv = wrk_argv(nginx.url, script, paths, since, seconds, rep)
                    setup = {IDLE: None, LIMITED: limited, SHIPPED: shipped}.get(mode, syncing)
                    prefix = {
                        SYNCING: (),
                        PRIORITY: UNIT_PRIORITY,
                        LIMITED: UNIT_PRIORITY,
                        SHIPPED: UNIT_PRIORITY,
                    }.get(mode, ())
                    load, synced = _loaded(argv, setup, logs / slug(mode), prefix)
                    loads[mode].append(load)
                    syncs[mode].append(synced)
                    bench.progress(
                        f"{name} {rep + 1}/{bench.runs} {mode}: {load.requests_per_s:,.0f} req/s, "
                        f"p99 {load.p99_ms:.2f} ms, {synced.runs} syncs"
                    )
    bench.tidy(name)
    return _result(bench, name, seconds, len(dataset.packages), loads, syncs, argv)


def _http_date(mtime: float) -> str:
    return email.utils.formatdate(int(mtime), usegmt=True)


def _result(
    bench: Bench,
    name: str,
    seconds: int,
    packages: int,
    loads: dict[str, list[Load]],
    syncs: dict[str, list[Syncs]],
    argv: list[str],
) -> ScenarioResult:
    def med(mode: str, value: str) -> float:
        return median([getattr(load, value) for load in loads[mode]])

    figures = {
        mode: {key: med(mode, key) for key in ("requests_per_s", "mb_per_s", "p50_ms", "p99_ms")}
        for mode in MODES
    }

    def kept(mode: str) -> tuple[float, float]:
        """(throughput kept, p99 kept), each the median over runs of the ratio to the idle
        window of the same run (seconds apart): 1.0 when serving is as good as when idle."""
        pairs = list(zip(loads[IDLE], loads[mode], strict=True))
        return median([m.requests_per_s / i.requests_per_s for i, m in pairs]), median(
            [i.p99_ms / m.p99_ms for i, m in pairs]
        )

    def sync_cell(mode: str, what: str) -> str:
        runs = syncs[mode]
        cpu, wall = sum(s.cpu for s in runs), sum(s.wall for s in runs)
        fetched = sum(s.fetched_bytes for s in runs)
        if mode == IDLE or not fetched:
            return "-"
        if what == "syncs":
            return f"{sum(s.runs for s in runs)}"
        if what == "rate":
            return fmt(fetched / 1e6 / wall, 1)
        return fmt(cpu / (fetched / 1e9), 1)

    rows: list[tuple[str, ...]] = [
        ("requests/s", *(fmt(figures[m]["requests_per_s"], 0) for m in MODES)),
        ("MB/s served", *(fmt(figures[m]["mb_per_s"], 0) for m in MODES)),
        ("p50 latency ms", *(fmt(figures[m]["p50_ms"]) for m in MODES)),
        ("p99 latency ms", *(fmt(figures[m]["p99_ms"]) for m in MODES)),
        ("wrk errors (sum)", *(str(sum(x.errors for x in loads[m])) for m in MODES)),
        ("machine load average (1 min, median)", *(fmt(med(m, "load_average"), 1) for m in MODES)),
        ("throughput kept (vs idle)", *(f"{kept(m)[0]:.2f}x" for m in MODES)),
        ("p99 kept (idle p99 / p99)", *(f"{kept(m)[1]:.2f}x" for m in MODES)),
        ("mirrord full syncs in the windows", *(sync_cell(m, "syncs") for m in MODES)),
        ("mirrord MB/s fetched while syncing", *(sync_cell(m, "rate") for m in MODES)),
        ("mirrord CPU s per GB fetched", *(sync_cell(m, "cpu") for m in MODES)),
    ]
    throughput, p99 = kept(SHIPPED)
    load = (
        "at a paced load of about half its capacity"
        if name == "serving-paced"
        else ("driven at its capacity")
    )
    goal = GoalCheck(
        f"{load}, while mirrord syncs as shipped (the unit's priorities, the example's "
        "daytime rate limit and `worker_cpu: idle`), nginx keeps >= 90 % of its idle "
        "throughput and p99 latency",
        f"throughput {throughput:.2f}x, p99 {p99:.2f}x of idle (priorities alone: "
        f"{kept(PRIORITY)[0]:.2f}x, {kept(PRIORITY)[1]:.2f}x; with the rate limit: "
        f"{kept(LIMITED)[0]:.2f}x, {kept(LIMITED)[1]:.2f}x)",
        throughput >= 0.9 and p99 >= 0.9,
    )
    pacing = (
        f"each connection waiting a random time between requests (exponential, mean "
        f"{PACED_MEAN_DELAY_MS} ms: at most {WRK_CONNECTIONS * 1000 // PACED_MEAN_DELAY_MS:,} "
        "requests/s offered)"
        if name == "serving-paced"
        else "each connection sending its next request as soon as the last is answered"
    )
    return ScenarioResult(
        name=name,
        title="Sync never starves serving"
        + (", at a realistic load" if name == "serving-paced" else ", at capacity"),
        summary=(
            f"nginx (config/nginx-mirrord.conf, 2 workers) serves mirrord's published tree of "
            f"{packages:,} packages (the release set) to wrk ({WRK_THREADS} threads, "
            f"{WRK_CONNECTIONS} connections, {seconds} s, {pacing}; 85 % packages, 5 % index, "
            "5 % index revalidations (304), 5 % the listing), with mirrord idle, running full "
            "syncs back to back from another nginx (the origin, at nice 19: on a T1 it is another "
            "machine) into fresh storage on the same disk, doing so "
            f"under `{' '.join(UNIT_PRIORITY)}` (the unit's Nice= and IOScheduling*=), and "
            f"that with `fetch.rate_limit: {RATE_LIMIT}` as well, and all that with "
            "`fetch.worker_cpu: idle` (the fetch workers under SCHED_IDLE), which is how "
            "config/mirrord.example.yaml ships. Medians "
            f"of {bench.runs} alternating run(s); MB = 10^6 bytes."
        ),
        tables=(Table(("figure", *MODES), tuple(rows)),),
        notes=(
            "wrk, both nginx and mirrord share the same 2 cores: the loaded columns measure CPU "
            "contention on loopback, not a network link.",
            "'kept' rows: the median over runs of each run's ratio to its own idle window, "
            "taken seconds before (other work on the machine drifts between runs).",
        ),
        commands=(shlex.join(argv), *[c for s in syncs[PRIORITY][:1] for c in s.commands[:1]]),
        goals=(goal,),
        figures=figures,
    )
