"""Running a command and measuring its whole process tree.

- wall: time.perf_counter() from just before the fork to the return of wait4.
- CPU: user + system seconds from os.wait4's rusage, which counts the process
  and every descendant it waited for (mirrord reaps its fetch workers).
- memory: a thread walks the tree (/proc/PID/task/*/children) every 50 ms and
  sums VmRSS (and Pss from smaps_rollup) over it; the peaks are reported.
  RSS sums count pages shared between processes more than once; PSS does not.
  (wait4's ru_maxrss is not used: a forked child inherits the parent's RSS
  until it execs, so it reports the harness's size for small tools.)
For a process that keeps running (the daemon), ``tree_cpu_seconds`` reads
utime + stime (+ reaped children) from /proc/PID/stat, in clock ticks.
``machine_busy_seconds`` is every CPU's non-idle time from /proc/stat: what a
run costs the whole machine (the web server, the kernel's writeback threads),
meaningful on an otherwise quiet machine only.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SAMPLE_INTERVAL = 0.05
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    wall: float
    user: float
    system: float
    peak_rss: int  # bytes, summed over the tree
    peak_pss: int  # bytes, summed over the tree
    peak_root_rss: int  # bytes, the first process alone
    returncode: int

    @property
    def cpu(self) -> float:
        return self.user + self.system


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of all CPUs since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()
    assert fields[0] == "cpu", fields
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def tree_pids(root: int) -> list[int]:
    """``root`` and its live descendants."""
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
            except OSError:
                continue
    return found


def _status_kib(pid: int, path: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def tree_memory(root: int) -> tuple[int, int, int]:
    """(RSS summed, PSS summed, RSS of root) in bytes."""
    rss = pss = root_rss = 0
    for pid in tree_pids(root):
        own = _status_kib(pid, "status", "VmRSS:") * 1024
        rss += own
        pss += _status_kib(pid, "smaps_rollup", "Pss:") * 1024
        if pid == root:
            root_rss = own
    return rss, pss, root_rss


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` (with reaped children) and its live descendants."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command: state is fields[0], so utime..cstime are fields[11:15]
        ticks = [int(v) for v in fields[11:15]]
        total += sum(ticks) if pid == root else ticks[0] + ticks[1]
    return total / _TICK


class _Peaks(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name=f"peaks {pid}")
        self.pid = pid
        self.done = threading.Event()
        self.rss = self.pss = self.root_rss = 0

    def run(self) -> None:
        while True:
            rss, pss, root_rss = tree_memory(self.pid)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self.root_rss = max(self.root_rss, root_rss)
            if self.done.wait(SAMPLE_INTERVAL):
                return


def run(
    argv: Sequence[str],
    *,
    stdout: Path,
    stderr: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Usage:
    """Run ``argv`` to completion, output to files, and measure it."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, cwd=cwd, env=env)
        peaks = _Peaks(process.pid)
        peaks.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # interrupted: leave nothing running behind
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        peaks.done.set()
        peaks.join()
    return Usage(
        wall=wall,
        user=usage.ru_utime,
        system=usage.ru_stime,
        peak_rss=peaks.rss,
        peak_pss=peaks.pss,
        peak_root_rss=peaks.root_rss,
        returncode=process.returncode,
    )


def loopback_bytes() -> int:
    """Bytes received on ``lo`` so far (every loopback byte is sent and received once)."""
    with open("/proc/net/dev") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    raise RuntimeError("no lo interface in /proc/net/dev")


def tcp_retransmitted_segments() -> int:
    """TCP segments sent again so far in this network namespace (``RetransSegs``)."""
    with open("/proc/net/snmp") as handle:
        rows = [line.split() for line in handle if line.startswith("Tcp:")]
    if len(rows) != 2:
        raise RuntimeError("no Tcp rows in /proc/net/snmp")
    names, values = rows
    return int(values[names.index("RetransSegs")])


class Periodic:
    """Samples ``read()`` every ``interval`` seconds on a thread, while in the ``with``."""

    def __init__(self, read: Callable[[], int], interval: float) -> None:
        self._read = read
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="periodic")
        self.samples: list[tuple[float, int]] = []

    def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            self.samples.append((time.monotonic(), self._read()))
            next_at += self._interval
            if self._done.wait(max(0.0, next_at - time.monotonic())):
                self.samples.append((time.monotonic(), self._read()))
                return

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
