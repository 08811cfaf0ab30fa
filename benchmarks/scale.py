"""Scale to the real tree: start-up, the nothing-changed pass, GC and verify at 2 million objects.

``python -m benchmarks.scale [--total 2000000] [--fractions 0.1 0.25 0.5 1]``
generates, for each fraction, the state a finished sync of every branch x
repo x arch (198 indexes) leaves (``benchmarks.scalestate``), serves the same
indexes from nginx, and measures wall time, CPU and peak RSS of:

- ``mirrord sync`` twice, nothing changed: the first pass downloads each index
  again (no validators yet) and finds it identical, the second gets 304s; both
  include the one-shot process's start-up;
- ``mirrord run``: start until ``daemon.ready`` (recovery: sweeps, the store
  against state.db, every arch's tree), then the daemon's own first pass;
- ``mirrord ctl gc`` on that daemon (1 % of objects are garbage);
- ``mirrord run`` again after that daemon's clean stop (SIGTERM), until ready;
- ``mirrord verify-tree``: every published file read and checked.

Each size's work directory is deleted before the next. Prints a Markdown
report with a growth verdict per figure (per-object cost at 100 % against 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from benchmarks import measure
from benchmarks.scalestate import all_arches, arch_config, generate
from benchmarks.servers import LoggedNginx
from mirrord.demo.repogen import SigningKey
from mirrord.shell.control.client import call

MIRRORD = (sys.executable, "-m", "mirrord.shell.cli")
RESTART = "run: restart after a clean stop, until ready"


@dataclass(frozen=True)
class Figure:
    wall: float
    cpu: float
    peak_rss: int  # bytes


@dataclass
class SizeResult:
    objects: int
    generate_seconds: float
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def config(work: Path, origin: str, keys: Path) -> dict[str, Any]:
    return {
        "origin": {"url": origin, "keys": str(keys)},
        "repositories": arch_config(all_arches()),
        "interval": 86400,
        "storage": {"path": str(work / "storage"), "gc_interval": 0, "min_free": 0},
        "publish": {"path": str(work / "published"), "grace": 3600},
        "control": {"socket": str(work / "control.sock")},
        "metrics": {"listen": False},
        "log": {"level": "debug", "format": "json"},  # debug: unchanged arches log sync.arch.done
    }


def proc_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return 0


class DaemonLog(threading.Thread):
    """Reads the daemon's JSON log lines and counts the events the benchmark waits for."""

    def __init__(self, stream: IO[bytes], copy: IO[bytes]) -> None:
        super().__init__(daemon=True, name="daemon-log")
        self.stream = stream
        self.copy = copy
        self.ready = threading.Event()
        self.arches_done = 0
        self.changed = threading.Condition()

    def run(self) -> None:
        for line in self.stream:
            self.copy.write(line)
            try:
                event = json.loads(line).get("event")
            except ValueError:
                continue
            if event == "daemon.ready":
                self.ready.set()
            elif event in ("sync.arch.done", "sync.arch.failed"):
                with self.changed:
                    self.arches_done += 1
                    self.changed.notify_all()
        self.ready.set()

    def wait_arches(self, count: int) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.arches_done >= count)


def one_shot(name: str, argv: list[str], logs: Path) -> Figure:
    usage = measure.run(argv, stdout=logs / f"{name}.out", stderr=logs / f"{name}.err")
    if usage.returncode != 0:
        raise SystemExit(f"{name} exited {usage.returncode}: see {logs / (name + '.err')}")
    return Figure(usage.wall, usage.cpu, usage.peak_root_rss)


class Daemon:
    """``mirrord run`` with its log read on a thread; ``ready_figure`` once it is ready."""

    def __init__(self, path: Path, copy: IO[bytes]) -> None:
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [*MIRRORD, "run", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        self.log = DaemonLog(self.process.stdout, copy)
        self.log.start()

    def ready_figure(self, logs: Path) -> Figure:
        self.log.ready.wait()
        if self.process.poll() is not None:
            raise SystemExit(f"mirrord run exited {self.process.returncode}: see {logs}/run.log")
        return Figure(
            time.perf_counter() - self.started,
            measure.tree_cpu_seconds(self.process.pid),
            proc_kib(self.process.pid, "VmHWM:") * 1024,
        )

    def stop(self) -> None:
        """SIGTERM: the clean stop."""
        self.process.terminate()
        self.process.wait(timeout=120)
        self.log.join()


def daemon_figures(path: Path, work: Path, logs: Path, result: SizeResult) -> None:
    arches = len(all_arches())
    with (logs / "run.log").open("wb") as copy:
        daemon = Daemon(path, copy)
        try:
            ready = result.figures["run: start until ready"] = daemon.ready_figure(logs)
            ready_at = time.perf_counter()
            daemon.log.wait_arches(arches)
            pid = daemon.process.pid
            passed_cpu = measure.tree_cpu_seconds(pid)
            result.figures["run: first pass, nothing changed"] = Figure(
                time.perf_counter() - ready_at,
                passed_cpu - ready.cpu,
                proc_kib(pid, "VmHWM:") * 1024,
            )
            gc_started = time.perf_counter()
            answer = asyncio.run(call(work / "control.sock", "gc", {}, answer_within=3600))
            result.figures["ctl gc"] = Figure(
                time.perf_counter() - gc_started,
                measure.tree_cpu_seconds(pid) - passed_cpu,
                proc_kib(pid, "VmHWM:") * 1024,
            )
            result.notes.append(f"gc: {answer}")
        finally:
            daemon.stop()
    with (logs / "restart.log").open("wb") as copy:
        daemon = Daemon(path, copy)
        try:
            figure = daemon.ready_figure(logs)
            result.figures[RESTART] = figure
        finally:
            daemon.stop()


def startup_figures(path: Path, logs: Path, result: SizeResult) -> None:
    """Only the two starts: the first (full recovery), then one after a clean stop."""
    for name, log in (("run: start until ready", "run"), (RESTART, "restart")):
        with (logs / f"{log}.log").open("wb") as copy:
            daemon = Daemon(path, copy)
            try:
                result.figures[name] = daemon.ready_figure(logs)
            finally:
                daemon.stop()


def measure_size(
    total: int, work: Path, signing: SigningKey, keys: Path, *, startup_only: bool = False
) -> SizeResult:
    started = time.perf_counter()
    stored = generate(
        work / "storage", work / "published", work / "origin", signing, total, now=time.time()
    )
    result = SizeResult(stored, time.perf_counter() - started)
    logs = work / "logs"
    logs.mkdir()
    with LoggedNginx(work / "origin", work / "nginx") as nginx:
        path = work / "mirrord.yaml"
        path.write_text(yaml.safe_dump(config(work, nginx.url, keys)))
        if startup_only:
            startup_figures(path, logs, result)
            return result
        sync = [*MIRRORD, "sync", "--config", str(path)]
        result.figures["sync: nothing changed, same index"] = one_shot("sync-1", sync, logs)
        result.figures["sync: nothing changed, 304"] = one_shot("sync-2", sync, logs)
        daemon_figures(path, work, logs, result)
    verify = [*MIRRORD, "verify-tree", "--config", str(path)]
    result.figures["verify-tree"] = one_shot("verify", verify, logs)
    return result


def shape(ratio: float, scale: float) -> str:
    if ratio < 1.5:
        return "flat"
    return "linear" if ratio <= scale * 1.3 else "superlinear"


def growth(small: SizeResult, large: SizeResult, pick: str) -> str:
    """Flat, linear or superlinear in CPU (wall on a shared machine is noise) and in RSS."""
    scale = large.objects / small.objects
    a, b = small.figures[pick], large.figures[pick]
    cpu = b.cpu / max(a.cpu, 0.01)
    rss = b.peak_rss / max(a.peak_rss, 1)
    return (
        f"CPU {shape(cpu, scale)} (x{cpu:.1f}), RSS {shape(rss, scale)} (x{rss:.2f}), "
        f"wall x{b.wall / max(a.wall, 0.01):.1f}, for x{scale:.1f} objects"
    )


def report(results: list[SizeResult], command: str, load: str) -> str:
    lines = [f"`{command}` (load average at start: {load})", ""]
    names = list(results[0].figures)
    header = "| figure | " + " | ".join(f"{r.objects:,} objects" for r in results) + " |"
    lines += [header, "|---|" + "---:|" * len(results)]
    lines.append(
        "| generate the state, s | "
        + " | ".join(f"{r.generate_seconds:.0f}" for r in results)
        + " |"
    )
    for name in names:
        cells = [
            f"{f.wall:.2f} s, {f.cpu:.2f} CPU-s, {f.peak_rss / 2**20:.0f} MiB"
            for f in (r.figures[name] for r in results)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(results) > 1:
        lines += ["", "| figure | growth, smallest to largest |", "|---|---|"]
        lines += [f"| {name} | {growth(results[0], results[-1], name)} |" for name in names]
    for r in results:
        lines += [f"- {r.objects:,} objects: {note}" for note in r.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--total", type=int, default=2_000_000, help="objects at 100 %%")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--startup-only",
        action="store_true",
        help="measure only start-up: the first start, then a restart after a clean stop",
    )
    args = parser.parse_args(argv)
    command = "python -m benchmarks.scale " + " ".join(argv or sys.argv[1:])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    signing = SigningKey.generate("mirrord-scale")
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="mirrord-scale-", dir=args.work) as directory:
        keys = Path(directory) / "keys"
        signing.write_public(keys)
        for fraction in args.fractions:
            work = Path(directory) / f"size-{fraction}"
            work.mkdir()
            try:
                size = int(args.total * fraction)
                results.append(
                    measure_size(size, work, signing, keys, startup_only=args.startup_only)
                )
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(report(results[-1:], command.strip(), load), file=sys.stderr, flush=True)
    print(report(results, command.strip(), load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
