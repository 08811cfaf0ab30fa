"""Scenario: an ISO in the releases tree beside a package sync; does it delay the packages?

The same package set is synced twice per run into fresh storage: once with
packages only (the baseline), once with a ``releases:`` section whose
directory holds one image as large as the whole package set, so both
compete for the same connections and CPU from the first second. The figure
is the package arch's own ``sync.arch.done`` seconds (poll to publish) in
each, and their ratio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import measure, mirrordrun
from benchmarks.context import Bench
from benchmarks.results import GoalCheck, ScenarioResult, Table, fmt, median
from benchmarks.scenarios.common import MAIN, Trial, completeness, trial
from benchmarks.servers import LoggedNginx
from benchmarks.trees import LiveOrigin, warm
from mirrord.demo.releasegen import write_release, write_top

CASES = (("packages only", None), ("beside a releases ISO", {"latest_stable": False}))
MAX_SLOWDOWN = 1.25  # the package publish may take at most this much longer


def _origin_with_iso(bench: Bench, root: Path, packages: int) -> tuple[LiveOrigin, int]:
    """The package set published at ``root``, beside one ISO of the same total size."""
    origin = LiveOrigin(root, bench.sets.key)
    origin.publish({MAIN: bench.sets.release().packages[:packages]})
    iso_bytes = sum(origin.expected().values())
    iso = (("standard", ".iso"),)
    write_release(root, MAIN.branch, MAIN.arch, "3.20.3", size=iso_bytes, flavors=iso)
    write_top(root, None)
    warm(root)
    return origin, iso_bytes


def releases_beside(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    dataset = bench.sets.release()
    directory = bench.scenario_dir("releases-beside")
    origin, iso_bytes = _origin_with_iso(bench, directory / "origin", len(dataset.packages))
    expected = origin.expected()
    logs = directory / "logs"
    logs.mkdir()
    arch_seconds: dict[str, list[float]] = {label: [] for label, _ in CASES}
    tree_seconds: list[float] = []
    trials: dict[str, list[Trial]] = {label: [] for label, _ in CASES}
    with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:
        for rep in range(bench.runs):
            for number, (label, releases) in enumerate(CASES):
                extra: dict[str, Any] = {}
                if releases is not None:
                    extra["releases"] = {"branches": [MAIN.branch], "arches": [MAIN.arch]}
                    extra["releases"].update(releases)

                def run(
                    out: Path, rep: int, extra: dict[str, Any] = extra, n: int = number
                ) -> tuple[measure.Usage, Path, str]:
                    setup = mirrordrun.MirrordSetup(
                        origin_url=nginx.url,
                        keys=bench.sets.public_keys(),
                        arches=(MAIN,),
                        directory=out,
                        fetch=mirrordrun.default_fetch(sizes.fetch_concurrency),
                        extra=extra,
                    )
                    result = mirrordrun.sync(setup, logs, f"mirrord-{n}-{rep}")
                    (done,) = result.named("sync.arch.done")
                    arch_seconds[CASES[n][0]].append(float(done["seconds"]))
                    if extra:
                        tree_seconds.append(result.usage.wall)
                    return result.usage, setup.published, result.command

                trials[label].append(
                    trial(run, directory / "mirrord", rep, expected, nginx, count_extra=False)
                )
            bench.progress(
                f"releases-beside {rep + 1}/{bench.runs}: "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in arch_seconds.items())
            )
    base, beside = (median(arch_seconds[label]) for label, _ in CASES)
    slowdown = beside / base if base > 0 else float("nan")
    rows = (
        ("package arch: poll to publish s", fmt(base), fmt(beside)),
        ("ratio to packages only", "1.00x", f"{slowdown:.2f}x"),
        (
            "whole mirrord sync wall s",
            fmt(median([t.usage.wall for t in trials[CASES[0][0]]])),
            fmt(median(tree_seconds)),
        ),
        ("package data MB", fmt(iso_bytes / 1e6, 1), fmt(iso_bytes / 1e6, 1)),
        ("ISO MB", "-", fmt(iso_bytes / 1e6, 1)),
        ("complete", *(completeness(trials[label]) for label, _ in CASES)),
    )
    return ScenarioResult(
        name="releases-beside",
        title="A releases ISO beside a package sync",
        summary=(
            f"mirrord syncs {len(dataset.packages)} packages ({iso_bytes / 1e6:.1f} MB) into "
            "fresh storage, once alone and once with a releases tree holding one ISO of the "
            "same size, both from one nginx on 127.0.0.1 (autoindex listings), no rate limit. "
            f"Medians of {bench.runs} alternating run(s)."
        ),
        tables=(Table(("figure", *(label for label, _ in CASES)), rows),),
        notes=(
            "The releases pass runs beside the package pass, one file at a time; an image "
            "starts only while no package is queued, downloading or committing, and its "
            "body is not read further while one is (Fetcher.wait_idle), so the ISO yields "
            "CPU and bandwidth to the packages. The package arch's seconds are from its own "
            "sync.arch.done event; the whole sync's wall time includes the ISO.",
        ),
        commands=(trials[CASES[1][0]][0].command,),
        goals=(
            GoalCheck(
                f"package publish at most {MAX_SLOWDOWN:.2f}x slower beside the ISO",
                f"{beside:.2f} s vs {base:.2f} s ({slowdown:.2f}x)",
                slowdown <= MAX_SLOWDOWN,
            ),
        ),
        figures={"mirrord": {"package_seconds": base, "beside_iso_seconds": beside}},
    )
