"""Scenario 3: a pass over many indexes when nothing changed at the origin.

mirrord is primed (one unmeasured sync of every arch), then measured twice:
as a one-shot ``mirrord sync`` process (interpreter start-up, worker start-up
and all) and as the daemon, ``mirrord run``, whose CPU is read from /proc
at the end of each pass: the per-pass cost a running mirror pays.
"""

from __future__ import annotations

import itertools

from benchmarks import mirrordrun
from benchmarks.context import Bench
from benchmarks.mirrordrun import BRANCH
from benchmarks.results import GoalCheck, ScenarioResult, Table, fmt, fmt_int, median, mib
from benchmarks.servers import LoggedNginx, Requests
from benchmarks.trees import LiveOrigin, warm
from mirrord.core.model import ArchKey

ALPINE_ARCHES = ("x86_64", "aarch64", "armv7", "armhf", "x86", "ppc64le", "s390x", "riscv64")
CPU_GOAL = 0.100


def _arches(repos: int, arches: int) -> list[ArchKey]:
    names = [*ALPINE_ARCHES, *(f"arch{i}" for i in range(max(0, arches - len(ALPINE_ARCHES))))]
    return [ArchKey(BRANCH, f"repo{r:02d}", a) for r in range(repos) for a in names[:arches]]


def unchanged(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    keys = _arches(sizes.unchanged_repos, sizes.unchanged_arches)
    packages = bench.sets.unchanged().packages
    per = sizes.unchanged_packages
    directory = bench.scenario_dir("unchanged")
    logs = directory / "logs"
    origin = LiveOrigin(directory / "origin", bench.sets.key)
    origin.publish({key: packages[i * per : (i + 1) * per] for i, key in enumerate(keys)})
    warm(origin.root)
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[float] = []
    shot_requests: list[Requests] = []
    with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:
        setup = mirrordrun.MirrordSetup(
            origin_url=nginx.url,
            keys=bench.sets.public_keys(),
            arches=tuple(keys),
            directory=directory / "mirrord",
            fetch=mirrordrun.default_fetch(sizes.fetch_concurrency),
            interval=sizes.daemon_interval,
        )
        mirrordrun.sync(setup, logs, "prime")
        for rep in range(bench.runs):
            mark = nginx.mark()
            run = mirrordrun.sync(setup, logs, f"mirrord-{rep}")
            shot_requests.append(nginx.requests_since(mark))
            walls.append(run.usage.wall)
            cpus.append(run.usage.cpu)
            rss.append(run.usage.peak_rss)
            bench.progress(f"unchanged {rep + 1}/{bench.runs} one-shot: {run.usage.cpu:.2f} s CPU")
            unchanged_count = len(
                [e for e in run.named("sync.arch.done") if e.get("outcome") == "unchanged"]
            )
            if unchanged_count != len(keys):
                raise RuntimeError(f"{unchanged_count} of {len(keys)} arches were unchanged")
        # pass 1 overlaps the fetch workers' start-up: measure from the end of pass 2 on
        marks, daemon_command = mirrordrun.daemon_passes(setup, logs, bench.runs + 2, nginx.mark)
        pairs = list(itertools.pairwise(marks[1:]))
        pass_cpu = [b.cpu - a.cpu for a, b in pairs]
        pass_wall = [b.when - a.when - sizes.daemon_interval for a, b in pairs]
        pass_requests = [_between(nginx, a.at, b.at) for a, b in pairs]
        bench.progress(f"unchanged daemon: {[round(c, 3) for c in pass_cpu]} s CPU per pass")
    daemon_cpu, shot_cpu = median(pass_cpu), median(cpus)

    def requests_cells(found: list[Requests]) -> tuple[str, str]:
        total = median([r.total for r in found])
        not_modified = median([r.by_status.get(304, 0) for r in found])
        return fmt_int(total), fmt_int(not_modified)

    shot_total, shot_304 = requests_cells(shot_requests)
    daemon_total, daemon_304 = requests_cells(pass_requests)
    rows = (
        ("wall s", fmt(median(walls)), fmt(median(pass_wall), 3)),
        ("CPU s (user+sys, tree)", fmt(median(cpus), 3), fmt(daemon_cpu, 3)),
        ("CPU ms per index", fmt(shot_cpu / len(keys) * 1000), fmt(daemon_cpu / len(keys) * 1000)),
        ("HTTP requests", shot_total, daemon_total),
        ("of which 304 Not Modified", shot_304, daemon_304),
        ("peak RSS MiB (tree sum)", fmt(mib(median(rss)), 1), "n/a"),
    )
    table = Table(("figure", "mirrord sync (one-shot process)", "mirrord run (per pass)"), rows)
    goal = GoalCheck(
        f"nothing changed: under {CPU_GOAL * 1000:.0f} ms CPU for {len(keys)} indexes "
        "(the daemon's pass)",
        f"{daemon_cpu * 1000:.0f} ms per pass (one-shot process: {median(cpus) * 1000:.0f} ms)",
        daemon_cpu < CPU_GOAL,
    )
    return ScenarioResult(
        name="unchanged",
        title="Nothing changed",
        summary=(
            f"{len(keys)} arches ({sizes.unchanged_repos} repos x {sizes.unchanged_arches} "
            f"arches, {per} small package(s) each), all already synced; one pass that finds "
            "nothing new. The one-shot figures are the whole `mirrord sync` process "
            "(Python start-up, imports, fetch worker start-up included; CPU from wait4). "
            "The daemon figures are `mirrord run`'s tree CPU (utime+stime from "
            "/proc/PID/stat, 10 ms ticks) between the ends of consecutive passes from the "
            "second pass on (the first overlaps the fetch workers' start-up), "
            f"including the {sizes.daemon_interval} s idle wait between them; its wall is the "
            "time between pass ends less that wait. "
            f"Medians of {bench.runs} run(s) / pass(es)."
        ),
        tables=(table,),
        notes=(
            "Requests are counted from nginx's access log: one conditional GET per index "
            "(If-None-Match / If-Modified-Since), expected to be answered 304.",
        ),
        commands=(
            run.command,
            daemon_command,
            f"mirrord config:\n{(logs / 'daemon.yaml').read_text()}",
        ),
        goals=(goal,),
        figures={"mirrord": {"daemon_cpu": daemon_cpu, "oneshot_cpu": median(cpus)}},
    )


def _between(nginx: LoggedNginx, start: int, end: int) -> Requests:
    found = nginx.requests_since(start)
    later = nginx.requests_since(end)
    statuses = {s: n - later.by_status.get(s, 0) for s, n in found.by_status.items()}
    return Requests(found.total - later.total, statuses, found.body_bytes - later.body_bytes)
