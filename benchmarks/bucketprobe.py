"""Like for like: the bucket's first upload of the release set, per source tree, and rclone.

``python -m benchmarks.bucketprobe /tmp/ab/base /tmp/ab/head [--runs 3] [--work DIR]``
primes one tree with the release set (a ``mirrord sync`` from nginx, as the ``bucket``
scenario does), starts a private SeaweedFS, then in alternating rounds runs each tree's
``mirrord sync`` with ``s3:`` set into a fresh bucket (through ``PYTHONPATH``), and
``rclone sync`` of the same published directory into another. Prints each run's wall time,
CPU (the process tree's) and the whole machine's busy CPU over the run (SeaweedFS shares the
two cores), then the medians. ``--wrap`` runs each mirrord under a command, as abprobe's.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shlex
import statistics
from pathlib import Path

from benchmarks import measure, mirrordrun
from benchmarks.netns import enter_private_loopback
from benchmarks.scenarios.bucket import CUTOFF, PART, TRANSFERS, rclone_argv, rclone_env
from benchmarks.scenarios.common import MAIN
from benchmarks.scratchdisk import scratch_disk
from benchmarks.servers import LoggedNginx
from benchmarks.sets import DataSets
from benchmarks.settings import FULL
from benchmarks.trees import LiveOrigin, fresh, warm
from tests.seaweed import Seaweed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (git archives)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bucketprobe"))
    parser.add_argument("--wrap", default="", help="a command that runs each mirrord sync")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        compileall.compile_dir(tree / "mirrord", quiet=1)  # as abprobe: no compiling per run
    enter_private_loopback()
    with scratch_disk(args.work.resolve(), print, journaled=True) as disk:
        print(f"disk: {disk.description}", flush=True)
        figures = probe(disk.path, trees, args.runs, shlex.split(args.wrap))
    for name, runs in figures.items():
        print(
            f"median {name:24} wall {statistics.median(r[0] for r in runs):.2f} s, "
            f"CPU {statistics.median(r[1] for r in runs):.2f} s, "
            f"machine {statistics.median(r[2] for r in runs):.2f} s"
        )


def probe(
    work: Path, trees: list[Path], runs: int, wrap: list[str]
) -> dict[str, list[tuple[float, float, float]]]:
    sets = DataSets(work / "data", FULL, print)
    directory = fresh(work / "bucketprobe")
    logs = directory / "logs"
    logs.mkdir()
    origin = LiveOrigin(directory / "origin", sets.key)
    origin.publish({MAIN: sets.release().packages})
    warm(origin.root)
    figures: dict[str, list[tuple[float, float, float]]] = {}

    def record(name: str, usage: measure.Usage, machine: float) -> None:
        figures.setdefault(name, []).append((usage.wall, usage.cpu, machine))
        print(
            f"{name:24} wall {usage.wall:.2f} s, CPU {usage.cpu:.2f} s, machine {machine:.2f} s",
            flush=True,
        )

    seaweed = Seaweed(directory / "seaweed")
    seaweed.start()
    try:
        with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:
            os.environ["PYTHONPATH"] = str(trees[0])
            base = mirrordrun.MirrordSetup(
                origin_url=nginx.url,
                keys=sets.public_keys(),
                arches=(MAIN,),
                directory=directory / "mirrord",
                fetch=mirrordrun.default_fetch(FULL.fetch_concurrency),
            )
            mirrordrun.sync(base, logs, "prime")
            source = base.published.joinpath(*MAIN.parts)
            s3 = {
                "endpoint": seaweed.endpoint,
                "prefix": "alpine",
                "credentials_file": str(seaweed.credentials_file(logs)),
                "concurrency": TRANSFERS,
                "multipart_threshold": CUTOFF.replace("M", "MiB"),
                "part_size": PART.replace("M", "MiB"),
            }
            for round_ in range(runs):
                for number, tree in enumerate(trees):
                    os.environ["PYTHONPATH"] = str(tree)
                    bucket = f"tree{number}-{round_}"
                    seaweed.create_bucket(bucket)
                    started = measure.machine_busy_seconds()
                    setup = base.with_s3({**s3, "bucket": bucket})
                    try:
                        run = mirrordrun.sync(setup, logs, bucket, prefix=wrap)
                    except mirrordrun.MirrordFailed as failed:
                        print(f"{tree.name} ({number}) failed, not counted: {failed}", flush=True)
                        drop(seaweed, bucket)
                        continue
                    busy = measure.machine_busy_seconds() - started
                    record(f"{tree.name} ({number})", run.usage, busy)
                    drop(seaweed, bucket)
                bucket = f"rclone-{round_}"
                seaweed.create_bucket(bucket)
                started = measure.machine_busy_seconds()
                usage = measure.run(
                    rclone_argv(source, bucket),
                    stdout=logs / f"{bucket}.out",
                    stderr=logs / f"{bucket}.err",
                    env=rclone_env(seaweed),
                )
                if usage.returncode != 0:
                    raise RuntimeError(f"rclone exited {usage.returncode} ({bucket})")
                record("rclone", usage, measure.machine_busy_seconds() - started)
                drop(seaweed, bucket)
    finally:
        seaweed.stop()
    return figures


def drop(seaweed: Seaweed, bucket: str) -> None:
    """Delete a measured bucket with its volumes: SeaweedFS here holds ~9 release sets."""
    seaweed.client().delete_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
