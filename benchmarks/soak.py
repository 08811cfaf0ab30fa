"""``python -m benchmarks.soak``: months of unattended life, accelerated (not CI).

A real ``mirrord run`` process against a flapping origin on loopback (the
demo origin with injected 503s, connection resets, short bodies and stalls):
a new origin generation every few seconds, ``ctl sync`` as a push would ask,
reloads (SIGHUP), verify, GC, pause/resume and rate changes. Every
``--sample`` seconds it records the daemon's RSS, open fds, threads and asyncio
tasks (``ctl status``) and checks every published tree like an apk client.

The baseline is the first sample after the warm-up (a tenth of the run), in the
same run; the report gives each figure at the end and at its peak as a ratio
to it. Flat means end / baseline near 1.00 and no upward trend.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirrord.alpine.signing import Keyring
from mirrord.core.errors import ControlError, MirrordError
from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault, OriginServer
from mirrord.demo.repogen import OriginTree, PackageSpec, SigningKey, simple_specs
from mirrord.publish.treecheck import check_tree
from mirrord.shell.control.client import call

ARCHES = [
    ArchKey("v3.20", "main", "x86_64"),
    ArchKey("v3.20", "main", "aarch64"),
    ArchKey("v3.20", "community", "x86_64"),
    ArchKey("edge", "main", "x86_64"),
]
PACKAGES = 60
GENERATION_EVERY = 2.0  # seconds between origin generations


@dataclass
class Sample:
    at: float  # seconds since the start
    rss_kib: int
    fds: int
    threads: int
    tasks: int


@dataclass
class Soak:
    minutes: float
    samples: list[Sample] = field(default_factory=list)
    generations: int = 0
    faults: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # ctl answers that were errors
    tree_checks: int = 0
    tree_problems: list[str] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    started: float = 0.0  # monotonic


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(VmRSS KiB, open fds, threads) of one process."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def config(work: Path, origin: str, keys: Path) -> dict[str, Any]:
    by_repo: dict[tuple[str, str], list[str]] = {}
    for key in ARCHES:
        by_repo.setdefault((key.branch, key.repo), []).append(key.arch)
    return {
        "origin": {"url": origin, "keys": str(keys)},
        "repositories": [{"branch": b, "repos": [r], "arches": a} for (b, r), a in by_repo.items()],
        "interval": 3,
        "storage": {"path": str(work / "storage"), "gc_interval": 10, "min_free": 0},
        "publish": {"path": str(work / "published"), "grace": 2, "keep_snapshots": 3},
        "fetch": {
            "concurrency": 8,
            "read_timeout": 1,
            "attempts": 3,
            "missing_grace": 0,
            "processes": 2,
            "processes_from": 30,
        },
        "control": {"socket": str(work / "control.sock")},
        "metrics": {"listen": False},
        "log": {"level": "warning", "format": "json"},
    }


class Life:
    """The origin's side: generations of packages and the faults it throws."""

    def __init__(self, tree: OriginTree, origin: OriginServer, rng: random.Random) -> None:
        self.tree = tree
        self.origin = origin
        self.rng = rng
        self.contents = {
            key: simple_specs(f"{key.repo}-{key.arch}", PACKAGES, arch=key.arch, payload=3000)
            for key in ARCHES
        }
        self.added = 0

    def publish_all(self) -> None:
        for key, specs in self.contents.items():
            self.tree.put(key, specs)

    def next_generation(self) -> int:
        """Rebuild a few packages of one arch, add one, drop one; inject faults. Faults added."""
        key = self.rng.choice(ARCHES)
        specs = list(self.contents[key])
        for at in self.rng.sample(range(len(specs)), 3):
            specs[at] = specs[at].bumped()
        self.added += 1
        extra = PackageSpec(
            name=f"new-{self.added:06d}", version="1.0-r0", arch=key.arch, payload=2000
        )
        specs.append(extra)
        specs.pop(self.rng.randrange(len(specs) - 1))
        self.contents[key] = specs
        self.tree.put(key, specs)
        faults = 0
        for spec in self.rng.sample(specs, 3):
            fault = self.rng.choice(
                [
                    Fault.http(503, **{"Retry-After": "1"}),
                    Fault.reset(after=500),
                    Fault.truncate(700),
                    Fault.delay(1.5),  # longer than read_timeout: a stall
                    Fault.corrupt(),
                ]
            )
            self.origin.add_fault(f"{key}/{spec.filename}", fault)
            faults += 1
        if self.rng.random() < 0.2:
            self.origin.add_fault(f"{key}/APKINDEX.tar.gz", Fault.http(503))
            faults += 1
        return faults

    def calm(self) -> None:
        self.origin.faults.clear()


async def ctl(soak: Soak, socket: Path, cmd: str, **args: Any) -> Any:
    soak.commands[cmd] = soak.commands.get(cmd, 0) + 1
    try:
        return await call(socket, cmd, args, answer_within=60)
    except ControlError as error:  # e.g. "a verify is already running": counted, not fatal
        key = f"{cmd}: {getattr(error, 'code', 'error')}"
        soak.refused[key] = soak.refused.get(key, 0) + 1
        return None


async def wait_for_socket(socket: Path, process: subprocess.Popen[bytes]) -> None:
    while True:  # a benchmark harness may poll: the daemon's log level hides daemon.ready
        if process.poll() is not None:
            raise SystemExit(f"mirrord run exited at start: {process.returncode}")
        try:
            await call(socket, "status", {}, answer_within=5)
            return
        except (MirrordError, OSError):  # not listening yet
            await asyncio.sleep(0.1)


async def operate(soak: Soak, socket: Path, pid: int, generation: int) -> None:
    """What operators and push messages do, spread over the generations."""
    await ctl(soak, socket, "sync")  # as a push for the new generation would
    if generation % 5 == 0:
        os.kill(pid, signal.SIGHUP)
        soak.commands["SIGHUP"] = soak.commands.get("SIGHUP", 0) + 1
    if generation % 7 == 0:
        await ctl(soak, socket, "verify", repair=generation % 14 == 0)
    if generation % 11 == 0:
        await ctl(soak, socket, "gc")
    if generation % 13 == 0:
        await ctl(soak, socket, "pause")
        await ctl(soak, socket, "status")
        await ctl(soak, socket, "resume")
    if generation % 17 == 0:
        await ctl(soak, socket, "rate", value="2MB/s")
    if generation % 17 == 8:
        await ctl(soak, socket, "rate", value="schedule")


async def settle(soak: Soak, socket: Path) -> dict[str, Any]:
    """Until every arch has published the origin's current index after a calm sync."""
    await ctl(soak, socket, "sync")
    while True:
        status = await call(socket, "status", {})
        arches = status["arches"]
        if not status["sync"]["syncing"] and all(
            a["last_outcome"] in ("published", "unchanged") and not a["rerun_queued"]
            for a in arches
        ):
            return dict(status)
        await asyncio.sleep(0.5)


async def run(minutes: float, sample_every: float, seed: int, work: Path) -> Soak:
    soak = Soak(minutes)
    rng = random.Random(seed)
    key = SigningKey.generate("mirrord-soak")
    keys = work / "keys"
    key.write_public(keys)
    keyring = Keyring.load(keys)
    tree = OriginTree(work / "origin", key)
    tree.root.mkdir(parents=True)
    async with OriginServer(tree.root) as origin:
        life = Life(tree, origin, rng)
        life.publish_all()
        path = work / "mirrord.yaml"
        path.write_text(yaml.safe_dump(config(work, origin.url, keys)))
        socket = work / "control.sock"
        with open(work / "mirrord.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mirrord.shell.cli", "run", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                await wait_for_socket(socket, process)
                await settle(soak, socket)  # the first sync of every arch, before the clock
                await soak_loop(soak, life, socket, process.pid, keyring, sample_every, work)
                life.calm()
                soak.final_status = await settle(soak, socket)
                await check(soak, work, keyring, strict=True)
                soak.verify = await final_verify(soak, socket)
                sample(soak, process.pid, soak.final_status, time.monotonic() - soak.started)
            finally:
                process.send_signal(signal.SIGTERM)
                soak.exit_code = await asyncio.to_thread(process.wait, 60)
    return soak


def sample(soak: Soak, pid: int, status: dict[str, Any], at: float) -> None:
    rss, fds, threads = proc_figures(pid)
    soak.samples.append(Sample(at, rss, fds, threads, int(status.get("tasks", -1))))


async def check(soak: Soak, work: Path, keyring: Keyring, *, strict: bool = False) -> None:
    report = await asyncio.to_thread(check_tree, work / "published", ARCHES, keyring)
    soak.tree_checks += 1
    soak.tree_problems += [f"{'final' if strict else 'during'}: {p}" for p in report.problems]


async def until_idle_verify(socket: Path) -> dict[str, Any]:
    """Poll ``ctl status`` (an outside observer has nothing else) until no verify runs."""
    while True:
        verify: dict[str, Any] = (await call(socket, "status", {}))["verify"]
        if not verify["running"]:
            return verify
        await asyncio.sleep(0.5)


async def final_verify(soak: Soak, socket: Path) -> dict[str, Any]:
    await until_idle_verify(socket)
    await ctl(soak, socket, "verify")
    return await until_idle_verify(socket)


async def soak_loop(
    soak: Soak,
    life: Life,
    socket: Path,
    pid: int,
    keyring: Keyring,
    sample_every: float,
    work: Path,
) -> None:
    start = soak.started = time.monotonic()
    deadline = start + soak.minutes * 60
    next_sample = start
    while time.monotonic() < deadline:
        soak.generations += 1
        soak.faults += life.next_generation()
        await operate(soak, socket, pid, soak.generations)
        now = time.monotonic()
        if now >= next_sample:
            status = await call(socket, "status", {})
            sample(soak, pid, status, now - start)
            await check(soak, work, keyring)
            next_sample = now + sample_every
            last = soak.samples[-1]
            print(
                f"[{now - start:6.0f} s] gen {soak.generations}: rss {last.rss_kib} KiB, "
                f"fds {last.fds}, threads {last.threads}, tasks {last.tasks}",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(GENERATION_EVERY)


def report(soak: Soak, command: str) -> str:
    warm = soak.minutes * 60 / 10
    baseline = next((s for s in soak.samples if s.at >= warm), soak.samples[0])
    end = soak.samples[-1]
    lines = [
        f"## Soak: {soak.minutes:g} minutes of accelerated life (issue 13)",
        "",
        f"Command: `{command}`",
        "",
        f"A real `mirrord run` against a flapping origin: {soak.generations} origin generations "
        f"(one every {GENERATION_EVERY:g} s, 4 arches of {PACKAGES} packages), {soak.faults} "
        "injected faults (503 with Retry-After, resets, short bodies, 1.5 s stalls against a "
        "1 s read timeout, corrupt bodies, index 503s), "
        + ", ".join(f"{n} {cmd}" for cmd, n in sorted(soak.commands.items()))
        + ". Baseline: the first sample after the warm-up (a tenth of the run), same run.",
        "",
        "| figure | baseline | end | end / baseline | peak | peak / baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, unit in (("rss_kib", "KiB"), ("fds", ""), ("threads", ""), ("tasks", "")):
        first, last = getattr(baseline, name), getattr(end, name)
        peak = max(getattr(s, name) for s in soak.samples if s.at >= baseline.at)
        label = f"{name.removesuffix('_kib')} ({unit})" if unit else name
        lines.append(
            f"| {label} | {first} | {last} | {last / first:.2f} | {peak} | {peak / first:.2f} |"
        )
    failures = soak.final_status.get("background", {}).get("failures", {})
    lines += [
        "",
        f"Samples: {len(soak.samples)} at {', '.join(f'{s.at:.0f}' for s in soak.samples[:3])}"
        f" ... s; tree checks: {soak.tree_checks}, problems: {len(soak.tree_problems)}"
        + (f" (first: {soak.tree_problems[0]})" if soak.tree_problems else "")
        + f"; final verify: {soak.verify.get('checked')} objects, "
        f"{soak.verify.get('damaged')} damaged, {soak.verify.get('missing')} missing; "
        f"background failures: {failures or 'none'}; ctl refusals: {soak.refused or 'none'}; "
        f"exit code after SIGTERM: {soak.exit_code}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    command = "python -m benchmarks.soak " + " ".join(argv or sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="mirrord-soak-") as directory:
        soak = asyncio.run(run(args.minutes, args.sample, args.seed, Path(directory)))
    print(report(soak, command.strip()))
    flat = soak.exit_code == 0 and not soak.tree_problems
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
