"""Scenario 2: the incremental pass after an origin update, mirrord against rsync.

Each run starts both tools primed with the previous state of the release set
(an unmeasured full sync); then the origin adds, rebuilds and removes
packages, and the measured pass brings the mirror up to date.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import measure, mirrordrun
from benchmarks.context import Bench
from benchmarks.data import Package
from benchmarks.peers import RsyncStats, parse_rsync_stats, rsync
from benchmarks.results import (
    MISSING,
    NOT_INSTALLED,
    GoalCheck,
    ScenarioResult,
    Table,
    fmt,
    median,
    megabytes,
    mib,
    ratio,
)
from benchmarks.scenarios.common import MAIN, VERIFIES, Trial, completeness, med, trial
from benchmarks.servers import LoggedNginx, RsyncDaemon
from benchmarks.trees import LiveOrigin, warm

ARCH_DIR = "/".join(MAIN.parts)


@dataclass
class Side:
    """What one tool did over the runs."""

    trials: list[Trial] = field(default_factory=list)
    fetched: list[float] = field(default_factory=list)  # package bytes (mirrord's own count)
    received: list[float] = field(default_factory=list)  # bytes over the wire
    requests: list[float] = field(default_factory=list)  # HTTP requests / files transferred
    passes: list[float] = field(default_factory=list)  # mirrord's own sync.arch.done seconds
    command: str = ""


def _states(bench: Bench) -> tuple[list[Package], list[Package], str]:
    base = bench.sets.release()
    delta, built = bench.sets.delta()
    gone = set(delta.removed) | {spec.name for spec in delta.rebuilt}
    before = list(base.packages)
    after = [p for p in before if p.spec.name not in gone] + list(built.packages)
    what = (
        f"{len(delta.added)} added, {len(delta.rebuilt)} rebuilt (pkgrel + 1), "
        f"{len(delta.removed)} removed"
    )
    return before, after, what


def _rsync(daemon: RsyncDaemon, out: Path, logs: Path, tag: str) -> tuple[measure.Usage, str]:
    (out / ARCH_DIR).parent.mkdir(parents=True, exist_ok=True)
    argv = rsync(daemon.url, ARCH_DIR, out)
    stderr = logs / f"{tag}.err"
    usage = measure.run(argv, stdout=logs / f"{tag}.out", stderr=stderr)
    if usage.returncode != 0:
        raise RuntimeError(f"rsync exited {usage.returncode}: {stderr.read_text()[-500:]}")
    return usage, shlex.join(argv)


def _stats(logs: Path, tag: str) -> RsyncStats:
    return parse_rsync_stats((logs / f"{tag}.out").read_text())


def incremental(bench: Bench) -> ScenarioResult:
    before, after, what = _states(bench)
    directory = bench.scenario_dir("incremental")
    logs = directory / "logs"
    logs.mkdir()
    origin = LiveOrigin(directory / "origin", bench.sets.key)
    origin.publish({MAIN: after})
    expected = origin.expected()
    mine, theirs = Side(), Side()
    has_rsync = shutil.which("rsync") is not None

    def switch(state: Sequence[Package]) -> Callable[[], None]:
        def to_state() -> None:
            origin.publish({MAIN: state})
            warm(origin.root)

        return to_state

    with ExitStack() as stack:
        nginx = stack.enter_context(LoggedNginx(origin.root, directory / "nginx", workers=2))
        daemon = RsyncDaemon(origin.root, directory / "rsyncd")
        if has_rsync:
            stack.enter_context(daemon)
        setup = mirrordrun.MirrordSetup(
            origin_url=nginx.url,
            keys=bench.sets.public_keys(),
            arches=(MAIN,),
            directory=directory / "mirrord",
            fetch=mirrordrun.default_fetch(bench.sizes.fetch_concurrency),
        )

        def prime_mirrord(_out: Path, rep: int) -> None:
            switch(before)()
            mirrordrun.sync(setup, logs, f"prime-mirrord-{rep}")
            switch(after)()

        def run_mirrord(_out: Path, rep: int) -> tuple[measure.Usage, Path, str]:
            result = mirrordrun.sync(setup, logs, f"mirrord-{rep}")
            mine.fetched.append(result.fetched_bytes)
            mine.passes.extend(float(e["seconds"]) for e in result.named("sync.arch.done"))
            mine.command = result.command
            return result.usage, setup.published, result.command

        def prime_rsync(out: Path, rep: int) -> None:
            switch(before)()
            _rsync(daemon, out, logs, f"prime-rsync-{rep}")
            switch(after)()

        def run_rsync(out: Path, rep: int) -> tuple[measure.Usage, Path, str]:
            usage, theirs.command = _rsync(daemon, out, logs, f"rsync-{rep}")
            stats = _stats(logs, f"rsync-{rep}")
            theirs.received.append(stats.bytes_received)
            theirs.requests.append(stats.files_transferred)
            return usage, out, theirs.command

        for rep in range(bench.runs):
            # mirrord keeps files the index dropped for publish.grace: not "extra"
            done = trial(
                run_mirrord,
                setup.directory,
                rep,
                expected,
                nginx,
                prepare=prime_mirrord,
                count_extra=False,
            )
            mine.trials.append(done)
            if done.requests is not None:
                mine.received.append(done.requests.body_bytes)
                mine.requests.append(done.requests.total)
            bench.progress(f"incremental {rep + 1}/{bench.runs} mirrord: {done.usage.wall:.2f} s")
            if has_rsync:
                out = directory / "rsync"
                done = trial(run_rsync, out, rep, expected, None, prepare=prime_rsync)
                theirs.trials.append(done)
                bench.progress(f"incremental {rep + 1}/{bench.runs} rsync: {done.usage.wall:.2f} s")
    config = (logs / "mirrord-0.yaml").read_text()
    return _result(bench, what, len(before), mine, theirs if has_rsync else None, config)


def _result(
    bench: Bench, what: str, packages: int, mine: Side, theirs: Side | None, config: str
) -> ScenarioResult:
    def cells(
        label: str, value: Callable[[Side], float | None], digits: int = 2
    ) -> tuple[str, ...]:
        a = value(mine)
        b = value(theirs) if theirs else None
        return (
            label,
            fmt(a, digits),
            fmt(b, digits) if theirs else NOT_INSTALLED,
            ratio(b, a) if theirs else MISSING,
        )

    def listed(values: Callable[[Side], Sequence[float]]) -> Callable[[Side], float | None]:
        return lambda side: median(values(side)) if values(side) else None

    def per_trial(value: Callable[[Trial], float]) -> Callable[[Side], float | None]:
        return lambda side: med(side.trials, value) if side.trials else None

    def wall(side: Side) -> float:
        return med(side.trials, lambda t: t.usage.wall)

    def as_mb(values: Sequence[float]) -> list[float]:
        return [megabytes(v) for v in values]

    rows = [
        cells("wall s", wall),
        cells("wall + os.sync() after exit, s", per_trial(lambda t: t.usage.wall + t.synced)),
        cells("mirrord's pass alone, s (sync.arch.done seconds)", listed(lambda s: s.passes)),
        cells("CPU s (user+sys, tree)", per_trial(lambda t: t.usage.cpu)),
        cells("peak RSS MiB (tree sum)", per_trial(lambda t: mib(t.usage.peak_rss)), 1),
        cells("package bytes fetched, MB (mirrord's count)", listed(lambda s: as_mb(s.fetched)), 3),
        cells(
            "bytes received, MB (nginx bodies; rsync stats)", listed(lambda s: as_mb(s.received)), 3
        ),
        cells("requests (HTTP) / files transferred (rsync)", listed(lambda s: s.requests), 0),
        (
            "complete",
            completeness(mine.trials),
            completeness(theirs.trials) if theirs else NOT_INSTALLED,
            "",
        ),
    ]
    table = Table(("figure", "mirrord", "rsync -a --delete", "ratio rsync/mirrord"), tuple(rows))
    if theirs and theirs.trials:
        goal = GoalCheck(
            "incremental pass faster than rsync's",
            f"mirrord {wall(mine):.2f} s (its pass alone {median(mine.passes):.2f} s) "
            f"vs rsync {wall(theirs):.2f} s",
            wall(mine) < wall(theirs),
        )
    else:
        goal = GoalCheck("incremental pass faster than rsync's", "rsync not installed", None)
    return ScenarioResult(
        name="incremental",
        title="Incremental pass after an origin update",
        summary=(
            f"The release set ({packages:,} packages) changes at the origin: {what}. "
            "Both tools were primed with the previous state (an unmeasured full sync, every "
            "run); the measured pass brings them up to date. mirrord fetches over HTTP "
            "from nginx; rsync pulls from an rsync daemon on 127.0.0.1 over the same tree. "
            f"Medians of {bench.runs} alternating run(s)."
        ),
        tables=(table,),
        notes=(
            VERIFIES,
            "mirrord keeps files the new index no longer lists for publish.grace (3600 s) "
            "before deleting them; rsync --delete removes them at once.",
            "mirrord's requests are counted from nginx's access log during the measured pass "
            "(the conditional index GET plus one GET per new package).",
            "Wall is the whole process, as a cron job would run it; mirrord's includes its "
            "start-up (Python, imports, two fetch worker processes: see the one-shot figures "
            "under `unchanged`). 'Pass alone' is mirrord's own timing of the arch's pass, "
            "what a running daemon pays.",
        ),
        commands=(
            mine.command,
            *([theirs.command] if theirs else []),
            f"mirrord config:\n{config}",
        ),
        goals=(goal,),
    )
