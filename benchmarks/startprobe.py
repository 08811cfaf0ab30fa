"""Start-up of the commands people type: ``mirrord ctl``, ``--help``, ``check-config``.

``python -m benchmarks.startprobe /tmp/ab/base /tmp/ab/head [--runs 10]``: each
tree is a ``git archive`` of a commit, run through ``PYTHONPATH`` as
``python -m mirrord.shell.cli``, beside the bare interpreter (``python -c
pass``, the floor any Python command pays). The rounds alternate; medians of
wall and CPU (user + system of the child) per command and tree. ``ctl status``
asks a socket nobody listens on: the client's whole start-up, then the clear
error (exit 3), without a daemon's answer time in the figure.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
origin:
  url: http://127.0.0.1:9/
  keys: {keys}
repositories:
  - branch: v3.20
    repos: [main]
    arches: [x86_64]
storage:
  path: {root}/storage
publish:
  path: {root}/published
"""


def commands(work: Path) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "ctl status": ["ctl", "--socket", str(work / "absent.sock"), "status"],
        "check-config": ["check-config", "--config", str(work / "mirrord.yaml")],
    }


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    keys = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "alpine" / "keys"
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "mirrord.yaml").write_text(CONFIG.format(keys=keys, root=work))
        for tree in args.trees:
            compileall.compile_dir(tree / "mirrord", quiet=1)  # as an installed wheel has it
        cases: list[tuple[str, str, list[str], dict[str, str]]] = [
            ("python -c pass", "-", [sys.executable, "-c", "pass"], dict(os.environ))
        ]
        for tree in args.trees:
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            for name, argv in commands(work).items():
                cases.append(
                    (name, tree.name, [sys.executable, "-m", "mirrord.shell.cli", *argv], env)
                )
        walls: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        codes: dict[tuple[str, str], set[int]] = {}
        for _ in range(args.runs):
            for name, tree_name, argv, env in cases:
                wall, cpu, code = timed(argv, env)
                walls.setdefault((name, tree_name), []).append(wall)
                cpus.setdefault((name, tree_name), []).append(cpu)
                codes.setdefault((name, tree_name), set()).add(code)
    print("| command | tree | wall ms | CPU ms | exit |\n|---|---|---:|---:|---:|")
    for key, values in walls.items():
        name, tree_name = key
        print(
            f"| {name} | {tree_name} | {statistics.median(values) * 1e3:.0f} | "
            f"{statistics.median(cpus[key]) * 1e3:.0f} | {','.join(map(str, sorted(codes[key])))} |"
        )


if __name__ == "__main__":
    main()
