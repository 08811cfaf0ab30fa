"""Like for like: what opening state.db and reading the store's totals costs, per source tree.

``python -m benchmarks.statedbprobe /tmp/ab/base /tmp/ab/head [--objects 2000000] [--runs 5]``
writes a state.db holding only ``objects`` rows (the table start-up reads), then, for each
tree in turn and in its own process (``PYTHONPATH``), copies it, opens it once (a schema
upgrade, if the tree has one, is paid there and reported apart) and measures
``StateDB.open`` + ``object_stats`` + ``close``: the part of a daemon's start-up that grows
with the store. Prints CPU seconds, medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

MEASURE = """
import shutil, statistics, sys, time
from pathlib import Path
from mirrord.storage.statedb import StateDB
source, copy, runs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
shutil.copy(source, copy)
started = time.process_time()
StateDB.open(copy).close()
first = time.process_time() - started
seconds = []
for _ in range(runs):
    started = time.process_time()
    db = StateDB.open(copy)
    db.object_stats()
    db.close()
    seconds.append(time.process_time() - started)
print(f"first open {first:.3f} CPU-s, then open + totals median {statistics.median(seconds):.3f}")
"""


def write_objects(path: Path, count: int) -> None:
    for leftover in (path, path.with_name(path.name + "-wal")):
        leftover.unlink(missing_ok=True)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(
            "CREATE TABLE objects (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "checksum TEXT, stored_at REAL NOT NULL) WITHOUT ROWID; "
            "CREATE INDEX objects_identity ON objects (checksum, size); BEGIN;"
        )
        db.executemany(
            "INSERT INTO objects VALUES (?, ?, ?, 1.0)",
            (
                (hashlib.sha256(b"%d" % i).hexdigest(), 1000 + i, f"Q1{i:026d}=")
                for i in range(count)
            ),
        )
        db.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--objects", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/statedbprobe"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.work / "objects.db"
    write_objects(source, args.objects)
    for round_ in range(args.rounds):
        for tree in args.trees:
            copy = args.work / f"{tree.name}.db"
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            done = subprocess.run(
                [sys.executable, "-P", "-c", MEASURE, str(source), str(copy), str(args.runs)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            print(f"{tree.name:12} round {round_}: {done.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
