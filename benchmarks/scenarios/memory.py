"""Scenario 5: peak memory of a full sync of many small packages over several arches."""

from __future__ import annotations

from pathlib import Path

from benchmarks import measure, mirrordrun
from benchmarks.context import Bench
from benchmarks.mirrordrun import BRANCH
from benchmarks.results import GoalCheck, ScenarioResult, Table, fmt, mib
from benchmarks.scenarios.common import Trial, completeness, med, trial
from benchmarks.servers import LoggedNginx
from benchmarks.trees import LiveOrigin, warm
from mirrord.core.model import ArchKey

GOAL_MIB = 150.0
REPOS = ("main", "community", "testing", "extra", "contrib", "backports", "edge", "misc")


def memory(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count, repos = sizes.memory_packages, sizes.memory_repos
    pool = bench.sets.tiny().packages[:count]
    names = [*REPOS, *(f"repo{i}" for i in range(max(0, repos - len(REPOS))))][:repos]
    keys = [ArchKey(BRANCH, name, "x86_64") for name in names]
    per = -(-count // repos)
    directory = bench.scenario_dir("memory")
    logs = directory / "logs"
    logs.mkdir()
    origin = LiveOrigin(directory / "origin", bench.sets.key)
    origin.publish({key: pool[i * per : (i + 1) * per] for i, key in enumerate(keys)})
    expected = origin.expected()
    warm(origin.root)
    trials: list[Trial] = []
    command = ""
    with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:
        setup = mirrordrun.MirrordSetup(
            origin_url=nginx.url,
            keys=bench.sets.public_keys(),
            arches=tuple(keys),
            directory=directory / "mirrord",
            fetch=mirrordrun.default_fetch(sizes.fetch_concurrency),
        )

        def run(_out: Path, rep: int) -> tuple[measure.Usage, Path, str]:
            result = mirrordrun.sync(setup, logs, f"mirrord-{rep}")
            return result.usage, setup.published, result.command

        for rep in range(bench.runs):
            done = trial(run, setup.directory, rep, expected, nginx)
            trials.append(done)
            command = done.command
            bench.progress(
                f"memory {rep + 1}/{bench.runs}: {mib(done.usage.peak_rss):.0f} MiB, "
                f"{done.usage.wall:.1f} s"
            )
    rss = mib(med(trials, lambda t: float(t.usage.peak_rss)))
    pss = mib(med(trials, lambda t: float(t.usage.peak_pss)))
    root = mib(med(trials, lambda t: float(t.usage.peak_root_rss)))
    wall = med(trials, lambda t: t.usage.wall)
    rows = (
        ("peak RSS MiB, tree sum (daemon + fetch workers)", fmt(rss, 1)),
        ("peak PSS MiB, tree sum (shared pages counted once)", fmt(pss, 1)),
        ("peak RSS MiB, main process alone", fmt(root, 1)),
        ("wall s", fmt(wall)),
        ("files/s", fmt(len(expected) / wall, 0)),
        ("CPU s (user+sys, tree)", fmt(med(trials, lambda t: t.usage.cpu))),
        ("complete", completeness(trials)),
    )
    return ScenarioResult(
        name="memory",
        title="Memory at many packages",
        summary=(
            f"Full sync of {count:,} small packages spread over {repos} arches "
            f"({per:,} each) into empty storage. Memory is sampled every 50 ms over the "
            "whole process tree (mirrord and its fetch worker processes). Medians of "
            f"{bench.runs} run(s)."
        ),
        tables=(Table(("figure", "mirrord"), rows),),
        notes=(
            "The RSS sum counts the Python interpreter of each worker process separately; "
            "PSS shares pages that processes have in common.",
        ),
        commands=(command, f"mirrord config:\n{(logs / 'mirrord-0.yaml').read_text()}"),
        goals=(
            GoalCheck(
                f"memory under {GOAL_MIB:.0f} MiB at {count:,} packages (RSS, tree sum)",
                f"{rss:.1f} MiB (PSS {pss:.1f} MiB)",
                rss < GOAL_MIB,
            ),
        ),
        figures={"mirrord": {"rss_mib": rss, "pss_mib": pss}},
    )
