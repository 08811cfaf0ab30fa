"""Pieces shared by the scenarios: one measured trial of a tool, and row builders."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import measure
from benchmarks.mirrordrun import BRANCH
from benchmarks.results import MISSING, NOT_INSTALLED, fmt_int, median, ratio
from benchmarks.servers import LoggedNginx, Requests
from benchmarks.trees import TreeCheck, check_tree, fresh, remove
from mirrord.core.model import ArchKey

MAIN = ArchKey(BRANCH, "main", "x86_64")
VERIFIES = "mirrord verifies the index signature and every package's size, C: and datahash, "
VERIFIES += "and makes objects durable (syncfs) before publishing; the peers verify nothing "
VERIFIES += "and leave their writes in the page cache."


@dataclass(frozen=True)
class Trial:
    """One measured run of one tool."""

    usage: measure.Usage
    synced: float  # seconds an os.sync() took right after the tool exited
    machine_cpu: float  # busy CPU seconds of the whole machine from start to flushed
    requests: Requests | None
    check: TreeCheck
    command: str

    @property
    def ok(self) -> bool:
        return self.usage.returncode == 0 and self.check.complete


# A tool run: given an empty output directory and the run number, run it and
# return (usage, the tree to check, the command line).
Runner = Callable[[Path, int], tuple[measure.Usage, Path, str]]


def trial(
    runner: Runner,
    out: Path,
    rep: int,
    expected: Mapping[str, int],
    nginx: LoggedNginx | None,
    *,
    prepare: Callable[[Path, int], None] | None = None,
    count_extra: bool = True,
) -> Trial:
    """Run once into a fresh ``out`` (after ``prepare``, unmeasured), flush, check the
    result, delete it and flush again."""
    fresh(out)
    if prepare is not None:
        prepare(out, rep)
    mark = nginx.mark() if nginx else 0
    busy = measure.machine_busy_seconds()
    usage, tree, command = runner(out, rep)
    started = time.perf_counter()
    os.sync()
    synced = time.perf_counter() - started
    machine_cpu = measure.machine_busy_seconds() - busy
    check = check_tree(tree, expected, count_extra=count_extra)
    requests = nginx.requests_since(mark) if nginx else None
    remove(out)
    return Trial(usage, synced, machine_cpu, requests, check, command)


def peer_runner(argv_for: Callable[[Path, Path], list[str]], logs: Path, name: str) -> Runner:
    """A Runner for an external command writing into the output directory."""

    def run(out: Path, rep: int) -> tuple[measure.Usage, Path, str]:
        inputs = logs / f"{name}-inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        argv = argv_for(out, inputs)
        tag = f"{name}-{rep}"
        usage = measure.run(argv, stdout=logs / f"{tag}.out", stderr=logs / f"{tag}.err")
        return usage, out, shlex.join(argv)

    return run


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def med(trials: Sequence[Trial], value: Callable[[Trial], float]) -> float:
    return median([value(t) for t in trials])


def row(
    label: str,
    tools: Sequence[str],
    trials: Mapping[str, Sequence[Trial]],
    cell: Callable[[str, Sequence[Trial]], str],
    *,
    installed: Mapping[str, bool],
) -> tuple[str, ...]:
    """A table row: ``cell(tool, its trials)`` for each tool that ran."""
    cells = [label]
    for tool in tools:
        if not installed.get(tool, True):
            cells.append(NOT_INSTALLED)
        elif not trials.get(tool):
            cells.append(MISSING)
        else:
            cells.append(cell(tool, trials[tool]))
    return tuple(cells)


def ratio_row(
    label: str,
    tools: Sequence[str],
    figures: Mapping[str, float],
    *,
    installed: Mapping[str, bool],
) -> tuple[str, ...]:
    """peer / mirrord for each tool (mirrord's own cell is 1.00x)."""
    mine = figures.get(tools[0])
    cells = [label]
    for tool in tools:
        if not installed.get(tool, True):
            cells.append(NOT_INSTALLED)
        else:
            cells.append(ratio(figures.get(tool), mine))
    return tuple(cells)


def completeness(trials: Sequence[Trial]) -> str:
    bad = [t for t in trials if not t.ok]
    if not bad:
        return trials[0].check.describe() if trials else MISSING
    first = bad[0]
    reason = first.check.describe()
    if first.usage.returncode != 0:
        reason = f"exit {first.usage.returncode}; {reason}"
    return f"{len(bad)}/{len(trials)} runs bad ({reason})"


def requests_cell(trials: Sequence[Trial]) -> str:
    counts = [t.requests.total for t in trials if t.requests is not None]
    return fmt_int(median(counts)) if counts else MISSING


def retry_note(retries: Sequence[str], runs: int) -> tuple[str, ...]:
    """A note when mirrord had to start downloads again (none expected on loopback)."""
    if not retries:
        return ()
    return (
        f"mirrord logged {len(retries)} fetch.package.retry event(s) over {runs} run(s) "
        f"(downloads started again); the first: {retries[0]}",
    )
