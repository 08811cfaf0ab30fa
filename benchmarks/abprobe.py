"""Like for like: ``mirrord sync`` of one data set from several source trees, in turn.

``python -m benchmarks.abprobe release /tmp/ab/base /tmp/ab/head [--runs 3]``:
each tree is a ``git archive`` of a commit, run through ``PYTHONPATH`` (the
console script and its fetch workers both import from it), one full sync of
the set into empty storage per tree per round, against the same nginx, in a
private network namespace. Prints each run and the medians of wall, CPU (the
process tree's user + system) and whether the published tree was complete.
Alternating rounds spread slow phases of the machine over every tree alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from benchmarks import measure, mirrordrun
from benchmarks.netns import enter_private_loopback
from benchmarks.scenarios.common import MAIN, trial
from benchmarks.servers import LoggedNginx
from benchmarks.sets import DataSets
from benchmarks.settings import FULL
from benchmarks.trees import LiveOrigin, fresh, warm

SETS = ("release", "small_heavy", "large")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", choices=SETS)
    parser.add_argument("trees", nargs="+", type=Path, help="source trees to alternate")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/abprobe"))
    args = parser.parse_args()
    enter_private_loopback()
    sets = DataSets(args.work / "data", FULL, lambda message: print(message, flush=True))
    dataset = getattr(sets, args.set)()
    directory = fresh(args.work / "probe" / args.set)
    logs = directory / "logs"
    logs.mkdir()
    origin = LiveOrigin(directory / "origin", sets.key)
    origin.publish({MAIN: dataset.packages})
    expected = origin.expected()
    warm(origin.root)
    # Trees from before c307816 start their workers with ``python -m``, which imports
    # from the working directory first: work where there is no mirrord/ package.
    os.chdir(directory)
    runs: dict[Path, list[measure.Usage]] = {tree: [] for tree in args.trees}
    with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:

        def sync(out: Path, rep: int) -> tuple[measure.Usage, Path, str]:
            setup = mirrordrun.MirrordSetup(
                origin_url=nginx.url,
                keys=sets.public_keys(),
                arches=(MAIN,),
                directory=out,
                fetch=mirrordrun.default_fetch(32),
            )
            done = mirrordrun.sync(setup, logs, f"mirrord-{rep}")
            return done.usage, setup.published, done.command

        for round_ in range(args.runs):
            for number, tree in enumerate(args.trees):
                os.environ["PYTHONPATH"] = str(tree.resolve())
                done = trial(
                    sync, directory / "out", round_ * len(args.trees) + number, expected, nginx
                )
                runs[tree].append(done.usage)
                print(
                    f"{tree.name:12} round {round_}: wall {done.usage.wall:.2f} s, "
                    f"CPU {done.usage.cpu:.2f} s (user {done.usage.user:.2f}, "
                    f"system {done.usage.system:.2f}), complete {done.check.complete}",
                    flush=True,
                )
    for tree, usages in runs.items():
        print(
            f"median {tree.name:12} wall {statistics.median(u.wall for u in usages):.2f} s, "
            f"CPU {statistics.median(u.cpu for u in usages):.2f} s, "
            f"user {statistics.median(u.user for u in usages):.2f}, "
            f"system {statistics.median(u.system for u in usages):.2f}"
        )


if __name__ == "__main__":
    main()
