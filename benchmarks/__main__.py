"""``python -m benchmarks``: build the data, run the scenarios, write RESULTS.md."""

from __future__ import annotations

import argparse
import compileall
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.context import Bench
from benchmarks.netns import enter_private_loopback
from benchmarks.report import Run, machine, render, source_state
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import SCENARIOS
from benchmarks.scenarios.throughput import throughput
from benchmarks.scratchdisk import scratch_disk
from benchmarks.sets import DataSets
from benchmarks.settings import FULL, QUICK

HERE = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="mirrord against wget2, curl, aria2c, wget and rsync; writes RESULTS.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny data sets, one run each (the CI smoke mode)"
    )
    parser.add_argument(
        "--runs", type=int, help="alternating repetitions per figure (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"run just these: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=HERE / "work",
        help="cached data sets and scratch space (default benchmarks/work/)",
    )
    parser.add_argument(
        "--disk",
        choices=("image", "work"),
        default="image",
        help="where data and runs live: 'image' (default) an ext4 image with a journal in "
        "WORK, loop-mounted (falls back to WORK itself when that is not possible); "
        "'work' the work directory's own filesystem",
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "RESULTS.md", help="the report to write"
    )
    parser.add_argument(
        "--shared-loopback",
        action="store_true",
        help="stay in the machine's network namespace (default: a private one when root)",
    )
    return parser


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so nginx, rsync and mirrord are stopped on the way out."""
    raise SystemExit(128 + signum)


def compile_sources() -> None:
    """Byte-compile mirrord, as installing it from a wheel does.

    mirrord is installed editable here, and the environment may set
    PYTHONDONTWRITEBYTECODE: every mirrord process (and fetch worker) would
    then compile its sources at start, ~50 ms that no installed mirrord pays.
    """
    compileall.compile_dir(HERE.parent / "mirrord", quiet=1)


def _run_scenarios(
    args: argparse.Namespace, command: str, runs: int, network: str, work: Path, disk: str
) -> tuple[Run, list[ScenarioResult]]:
    """Every scenario asked for, in order; a failing one is reported and the rest still run."""
    sizes = QUICK if args.quick else FULL
    sets = DataSets(work / ("data-quick" if args.quick else "data"), sizes, _progress)
    bench = Bench(sets, sizes, runs, work, _progress)
    started = datetime.now(UTC)
    results: dict[str, ScenarioResult] = {}
    sources = [source_state(HERE.parent)]
    for name in args.only or SCENARIOS:
        _progress(f"scenario {name}")
        try:
            results[name] = SCENARIOS[name](bench)
            bench.tidy(name)
        except Exception as error:  # report it, run the rest, exit non-zero
            traceback.print_exc()
            results[name] = ScenarioResult(name, "failed", "", error=f"{error!r}")
        sources.append(source_state(HERE.parent))
    summary = throughput(results)
    ordered = [*results.values(), *([summary] if summary else [])]
    run = Run(
        started=started,
        finished=datetime.now(UTC),
        command=command,
        runs=runs,
        quick=args.quick,
        root=HERE.parent,
        network=network,
        disk=disk,
        sources=tuple(sources),
    )
    return run, ordered


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        build_parser().error("--runs must be at least 1")
    network = "the machine's loopback (shared)"
    if not args.shared_loopback:
        refused = enter_private_loopback()
        network = (
            f"the machine's loopback (shared: no private namespace, {refused})"
            if refused
            else "a private network namespace: its own loopback, no other traffic"
        )
    _progress(f"network: {network}")
    compile_sources()
    with scratch_disk(args.work.resolve(), _progress, journaled=args.disk == "image") as disk:
        _progress(f"disk: {disk.description}")
        command = shlex.join(["python", "-m", "benchmarks", *(argv or sys.argv[1:])])
        run, results = _run_scenarios(args, command, runs, network, disk.path, disk.description)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    history_file = HERE / "HISTORY.md"
    history = history_file.read_text() if history_file.exists() else ""
    args.output.write_text(render(results, run, machine(HERE.parent), history))
    _progress(f"wrote {args.output}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
