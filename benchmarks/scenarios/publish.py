"""Scenario 4: what a publish costs as an arch grows, for the same number of changes.

Arches of different sizes are primed once (a full sync each); then every run
rebuilds the same number of packages in each arch (a fresh batch per run, so
state builds up as in a real mirror) and reads ``publish.snapshot.done``'s
``seconds``: from every package stored to the new index live.
"""

from __future__ import annotations

from benchmarks import mirrordrun
from benchmarks.context import Bench
from benchmarks.data import Package
from benchmarks.mirrordrun import BRANCH
from benchmarks.results import GoalCheck, ScenarioResult, Table, fmt, fmt_int, median
from benchmarks.servers import LoggedNginx
from benchmarks.trees import INDEX_NAME, LiveOrigin, warm
from mirrord.core.model import ArchKey

GOAL_SECONDS = 0.050
FLAT_FACTOR = 1.5  # "flat": the largest arch's figure at most this times the smallest's


def _batch(rep: int, changes: int, smallest: int) -> list[int]:
    """Positions to rebuild in run ``rep``: spread over the smallest arch, disjoint per run."""
    step = smallest // changes
    if rep >= step:
        raise ValueError(f"{rep + 1} runs of {changes} changes do not fit in {smallest} packages")
    return [j * step + rep for j in range(changes)]


def publish_cost(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    pool = bench.sets.tiny().packages
    counts = sizes.publish_arch_sizes
    keys = {n: ArchKey(BRANCH, f"p{n}", "x86_64") for n in counts}
    state: dict[int, list[Package]] = {n: list(pool[:n]) for n in counts}
    directory = bench.scenario_dir("publish")
    logs = directory / "logs"
    origin = LiveOrigin(directory / "origin", bench.sets.key)
    origin.publish({keys[n]: state[n] for n in counts})
    warm(origin.root)
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    linked: dict[int, list[float]] = {n: [] for n in counts}
    walls: dict[int, list[float]] = {n: [] for n in counts}
    cpus: dict[int, list[float]] = {n: [] for n in counts}
    primes: dict[int, float] = {}
    with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:
        setups = {
            n: mirrordrun.MirrordSetup(
                origin_url=nginx.url,
                keys=bench.sets.public_keys(),
                arches=(keys[n],),
                directory=directory / f"mirrord-{n}",
                fetch=mirrordrun.default_fetch(sizes.fetch_concurrency),
            )
            for n in counts
        }
        for n in counts:
            primes[n] = mirrordrun.sync(setups[n], logs, f"prime-{n}").usage.wall
            bench.progress(f"publish: primed {n:,} packages in {primes[n]:.1f} s")
        for rep in range(bench.runs):
            positions = _batch(rep, sizes.publish_changes, min(counts))
            rebuilt = bench.sets.built(
                f"publish-rebuilt-{rep}", [pool[i].spec.bumped() for i in positions]
            )
            for n in counts:
                for position, package in zip(positions, rebuilt.packages, strict=True):
                    state[n][position] = package
                origin.publish({keys[n]: state[n]})
                warm(origin.arch_dir(keys[n]))
                run = mirrordrun.sync(setups[n], logs, f"mirrord-{n}-{rep}")
                (done,) = run.named("publish.snapshot.done")
                seconds[n].append(float(done["seconds"]))
                linked[n].append(float(done["linked"]))
                walls[n].append(run.usage.wall)
                cpus[n].append(run.usage.cpu)
                bench.progress(
                    f"publish {rep + 1}/{bench.runs} {n:,}: {float(done['seconds']) * 1000:.1f} ms"
                )
    index_mb = {n: (origin.arch_dir(keys[n]) / INDEX_NAME).stat().st_size / 1e6 for n in counts}
    per = {n: median(seconds[n]) for n in counts}
    heads = tuple(f"{n:,} packages" for n in counts)
    rows = (
        ("publish ms (publish.snapshot.done)", *(fmt(per[n] * 1000, 1) for n in counts)),
        ("files linked", *(fmt_int(median(linked[n])) for n in counts)),
        ("incremental pass wall s (whole process)", *(fmt(median(walls[n])) for n in counts)),
        ("incremental pass CPU s", *(fmt(median(cpus[n])) for n in counts)),
        ("index size MB", *(fmt(index_mb[n], 2) for n in counts)),
        ("priming full sync wall s (once)", *(fmt(primes[n], 1) for n in counts)),
    )
    worst = max(per.values())
    each = ", ".join(f"{n:,}: {per[n] * 1000:.1f} ms" for n in counts)
    config = (logs / f"mirrord-{max(counts)}-0.yaml").read_text()
    growth = per[max(counts)] / per[min(counts)] if per[min(counts)] > 0 else float("inf")
    changes = sizes.publish_changes
    goals = (
        GoalCheck(
            f"publish under {GOAL_SECONDS * 1000:.0f} ms for {changes} changes",
            f"slowest {worst * 1000:.1f} ms ({each})",
            worst < GOAL_SECONDS,
        ),
        GoalCheck(
            f"publish time flat in arch size (largest at most {FLAT_FACTOR}x smallest)",
            f"{max(counts):,} / {min(counts):,} packages: {growth:.2f}x",
            growth <= FLAT_FACTOR,
        ),
    )
    return ScenarioResult(
        name="publish",
        title="Publish cost against arch size",
        summary=(
            f"Arches of {', '.join(f'{n:,}' for n in counts)} small packages, each primed once; "
            f"then {bench.runs} run(s) each rebuilding {changes} packages (pkgrel + 1: "
            f"{changes} new files, {changes} dropped) in every arch. The figure is mirrord's "
            "own `publish.snapshot.done` `seconds`: from all packages stored to the new "
            "index live. Medians over the runs; state accumulates from run to run."
        ),
        tables=(Table(("figure", *heads), rows),),
        commands=(run.command, f"mirrord config:\n{config}"),
        goals=goals,
        figures={"mirrord": {f"publish_{n}": per[n] for n in counts}},
    )
