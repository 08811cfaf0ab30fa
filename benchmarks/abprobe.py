"""Like for like: ``mirrord sync`` of one data set from several source trees, in turn.

``python -m benchmarks.abprobe release /tmp/ab/base /tmp/ab/head [--runs 3]``:
each tree is a ``git archive`` of a commit (``TREE@N`` runs it with
``fetch.processes: N`` instead of ``auto``; ``TREE,pipeline=1,concurrency=16``
sets other ``fetch`` keys than the harness's), run through ``PYTHONPATH`` (the
console script and its fetch workers both import from it), one full sync of
the set into empty storage per tree per round, against the same nginx, in a
private network namespace. Prints each run and the medians of wall, CPU (the
process tree's user + system) and whether the published tree was complete.
Alternating rounds spread slow phases of the machine over every tree alike.
``--again`` measures a second sync after each full one instead (nothing changed);
``--rtt MS`` puts the wan scenario's delay proxy between mirrord and nginx;
``--wire-rtt MS`` puts nginx across a TUN wire whose every packet waits
(``benchmarks/tunwire.py``: TCP itself sees the round trip, windows and all),
and the runs report their rate. ``TREE,rate_limit=20MB/s,burst=16MiB`` sets
any ``fetch`` key.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import functools
import os
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path

from benchmarks import measure, mirrordrun
from benchmarks.netns import enter_private_loopback
from benchmarks.scenarios.common import MAIN, trial
from benchmarks.scratchdisk import scratch_disk
from benchmarks.servers import DelayProxy, LoggedNginx
from benchmarks.sets import DataSets
from benchmarks.settings import FULL
from benchmarks.trees import LiveOrigin, fresh, warm
from benchmarks.tunwire import SERVER, TunWire

SETS = ("release", "small_heavy", "large", "wan")
WAN_RATE_MBIT = 50  # per connection, as the wan scenario


@dataclass(frozen=True)
class Variant:
    tree: Path
    processes: int | str
    fetch: tuple[tuple[str, int | str], ...] = ()  # other fetch keys, as given

    @classmethod
    def parse(cls, spec: str) -> Variant:
        where, *settings = spec.split(",")
        tree, _, processes = where.partition("@")
        fetch = []
        for setting in settings:
            key, _, value = setting.partition("=")
            fetch.append((key, int(value) if value.isdigit() else value))
        return cls(Path(tree), int(processes) if processes else "auto", tuple(fetch))

    @property
    def name(self) -> str:
        name = self.tree.name if self.processes == "auto" else f"{self.tree.name}@{self.processes}"
        return ",".join([name, *(f"{key}={value}" for key, value in self.fetch)])

    def fetch_config(self, concurrency: int) -> dict[str, int | str]:
        return mirrordrun.default_fetch(concurrency) | {
            "processes": self.processes,
            **dict(self.fetch),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", choices=SETS)
    parser.add_argument("trees", nargs="+", help="source trees (TREE or TREE@PROCESSES)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--wrap",
        default="",
        help="a command that runs each sync, {run} replaced by the run's tag "
        "(e.g. 'py-spy record -f raw --subprocesses -o /tmp/{run}.txt --')",
    )
    parser.add_argument(
        "--again",
        action="store_true",
        help="measure a second sync right after each full one (nothing changed: start-up, "
        "the index's 304 and the exit)",
    )
    parser.add_argument(
        "--rtt",
        type=float,
        default=0.0,
        help=f"reach nginx through benchmarks/delayproxy.py with this round trip (ms) and "
        f"{WAN_RATE_MBIT} Mbit/s per connection, as the wan scenario",
    )
    parser.add_argument(
        "--wire-rtt",
        type=float,
        default=0.0,
        help="serve nginx from a network namespace behind a TUN wire with this round trip "
        "(ms), MTU 1500 (benchmarks/tunwire.py)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/abprobe"))
    parser.add_argument(
        "--disk",
        choices=("image", "work"),
        default="image",
        help="as python -m benchmarks: a journaled ext4 image in WORK, or WORK itself",
    )
    args = parser.parse_args()
    enter_private_loopback()
    with scratch_disk(args.work.resolve(), _say, journaled=args.disk == "image") as disk:
        _say(f"disk: {disk.description}")
        probe(args, disk.path)


def _say(message: str) -> None:
    print(message, flush=True)


def probe(args: argparse.Namespace, work: Path) -> None:
    sets = DataSets(work / "data", FULL, _say)
    dataset = getattr(sets, args.set)()
    directory = fresh(work / "probe" / args.set)
    logs = directory / "logs"
    logs.mkdir()
    origin = LiveOrigin(directory / "origin", sets.key)
    origin.publish({MAIN: dataset.packages})
    expected = origin.expected()
    warm(origin.root)
    # Trees from before c307816 start their workers with ``python -m``, which imports
    # from the working directory first: work where there is no mirrord/ package.
    os.chdir(directory)
    variants = [Variant.parse(spec) for spec in args.trees]
    for variant in variants:
        # As the harness does for its own tree: with PYTHONDONTWRITEBYTECODE set,
        # a tree without bytecode would compile every module in every process of
        # every run, ~1 CPU-s that no installed mirrord pays.
        compileall.compile_dir(variant.tree / "mirrord", quiet=1)
    runs: dict[Variant, list[measure.Usage]] = {variant: [] for variant in variants}
    with contextlib.ExitStack() as servers:
        nginx = LoggedNginx(origin.root, directory / "nginx", workers=2)
        if args.wire_rtt:
            wire = servers.enter_context(TunWire(args.wire_rtt, log=logs / "tunwire.log"))
            nginx.host, nginx.command_prefix = SERVER, wire.run_prefix
        servers.enter_context(nginx)
        url = nginx.url
        if args.rtt:
            proxy = DelayProxy(nginx.port, args.rtt, WAN_RATE_MBIT, logs / "delayproxy.log")
            url = f"http://127.0.0.1:{servers.enter_context(proxy).port}"

        def sync(out: Path, rep: int, variant: Variant) -> tuple[measure.Usage, Path, str]:
            setup = mirrordrun.MirrordSetup(
                origin_url=url,
                keys=sets.public_keys(),
                arches=(MAIN,),
                directory=out,
                fetch=variant.fetch_config(FULL.fetch_concurrency),
            )
            tag = f"mirrord-{rep}"
            prefix = shlex.split(args.wrap.replace("{run}", tag))
            done = mirrordrun.sync(setup, logs, tag, prefix=prefix)
            if args.again:
                done = mirrordrun.sync(setup, logs, f"{tag}-again", prefix=prefix)
            return done.usage, setup.published, done.command

        for round_ in range(args.runs):
            for number, variant in enumerate(variants):
                os.environ["PYTHONPATH"] = str(variant.tree.resolve())
                done = trial(
                    functools.partial(sync, variant=variant),
                    directory / "out",
                    round_ * len(variants) + number,
                    expected,
                    nginx,
                )
                runs[variant].append(done.usage)
                print(
                    f"{variant.name:12} round {round_}: wall {done.usage.wall:.2f} s, "
                    f"CPU {done.usage.cpu:.2f} s (user {done.usage.user:.2f}, "
                    f"system {done.usage.system:.2f}), "
                    f"{dataset.total_bytes / done.usage.wall / 1e6:.1f} MB/s, "
                    f"complete {done.check.complete}",
                    flush=True,
                )
    for variant, usages in runs.items():
        print(
            f"median {variant.name:12} wall {statistics.median(u.wall for u in usages):.2f} s, "
            f"CPU {statistics.median(u.cpu for u in usages):.2f} s, "
            f"user {statistics.median(u.user for u in usages):.2f}, "
            f"system {statistics.median(u.system for u in usages):.2f}"
        )


if __name__ == "__main__":
    main()
