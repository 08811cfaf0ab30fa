"""Running mirrord itself: a config file per run, ``mirrord sync`` or ``mirrord run``.

mirrord logs JSON lines on stdout (``log.format: json``); the figures it
reports about itself come from ``sync.arch.done`` and ``publish.snapshot.done``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from benchmarks import measure
from mirrord.core.model import ArchKey

BRANCH = "v3.20"


def mirrord_binary() -> str:
    """The ``mirrord`` entry point of the interpreter running the benchmarks."""
    return str(Path(sys.executable).parent / "mirrord")


def repositories(keys: Sequence[ArchKey]) -> list[dict[str, Any]]:
    """The config's ``repositories`` for these arches, repos with the same arches together."""
    arches: dict[tuple[str, str], list[str]] = {}
    for key in keys:
        arches.setdefault((key.branch, key.repo), []).append(key.arch)
    repos: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (branch, repo), names in arches.items():
        repos.setdefault((branch, tuple(names)), []).append(repo)
    return [
        {"branch": branch, "repos": names, "arches": list(archs)}
        for (branch, archs), names in repos.items()
    ]


@dataclass(frozen=True)
class MirrordSetup:
    origin_url: str
    keys: Path  # directory with the generator key's public half
    arches: tuple[ArchKey, ...]
    directory: Path  # the run's own storage/ and published/ live here
    fetch: Mapping[str, Any]
    interval: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # more top-level sections
    s3: Mapping[str, Any] | None = None

    def with_s3(self, s3: Mapping[str, Any]) -> MirrordSetup:
        return replace(self, s3=s3)

    @property
    def storage(self) -> Path:
        return self.directory / "storage"

    @property
    def published(self) -> Path:
        return self.directory / "published"

    def write(self, path: Path) -> Path:
        config: dict[str, Any] = {
            "origin": {"url": self.origin_url, "keys": str(self.keys)},
            "repositories": repositories(self.arches),
            "storage": {"path": str(self.storage)},
            "publish": {"path": str(self.published), "grace": 3600},
            "fetch": dict(self.fetch),
            "metrics": {"listen": False},
            "control": {"socket": False},
            # debug: the daemon logs an unchanged arch's sync there, and daemon_passes counts them
            "log": {"level": "debug", "format": "json"},
        }
        if self.interval is not None:
            config["interval"] = self.interval
        config.update(self.extra)
        if self.s3 is not None:
            config["s3"] = dict(self.s3)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def default_fetch(concurrency: int, **extra: Any) -> dict[str, Any]:
    return {"concurrency": concurrency, "processes": "auto", **extra}


@dataclass(frozen=True)
class MirrordRun:
    usage: measure.Usage
    events: tuple[dict[str, Any], ...]
    command: str

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def fetched(self) -> int:
        return sum(int(e["fetched"]) for e in self.named("sync.arch.done"))

    @property
    def retries(self) -> list[str]:
        """The errors of every ``fetch.package.retry`` (a download started again)."""
        return [str(e.get("error")) for e in self.named("fetch.package.retry")]

    @property
    def fetched_bytes(self) -> int:
        return sum(int(e["fetched_bytes"]) for e in self.named("sync.arch.done"))


class MirrordFailed(RuntimeError):
    pass


def read_events(path: Path) -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return tuple(found)


def sync(setup: MirrordSetup, logs: Path, tag: str, *, prefix: Sequence[str] = ()) -> MirrordRun:
    """One ``mirrord sync`` pass, measured; raises MirrordFailed unless it exits 0.

    ``prefix``: a command that runs it (``nice -n 10``, ``ionice -c 2 -n 7``).
    """
    logs.mkdir(parents=True, exist_ok=True)
    config = setup.write(logs / f"{tag}.yaml")
    argv = [*prefix, mirrord_binary(), "sync", "--config", str(config)]
    stdout, stderr = logs / f"{tag}.out", logs / f"{tag}.err"
    usage = measure.run(argv, stdout=stdout, stderr=stderr)
    if usage.returncode != 0:
        tail = stderr.read_text(errors="replace")[-2000:]
        raise MirrordFailed(f"mirrord sync exited {usage.returncode} ({tag}): {tail}")
    return MirrordRun(usage, read_events(stdout), " ".join(argv))


@dataclass(frozen=True)
class PassMark:
    cpu: float  # CPU seconds of the daemon's tree so far
    when: float  # time.monotonic()
    at: int  # a caller-chosen mark (the nginx access log offset) taken at the same moment


def daemon_passes(
    setup: MirrordSetup,
    logs: Path,
    passes: int,
    mark: Callable[[], int],
    timeout: float = 600.0,
) -> tuple[list[PassMark], str]:
    """Run ``mirrord run`` until ``passes`` passes have ended; a mark at the end of each.

    A pass has ended when every arch has logged ``sync.arch.done``/``failed``.
    """
    logs.mkdir(parents=True, exist_ok=True)
    config = setup.write(logs / "daemon.yaml")
    argv = [mirrord_binary(), "run", "--config", str(config)]
    marks: list[PassMark] = []
    per_pass = len(setup.arches)
    with (logs / "daemon.out").open("w") as copy, (logs / "daemon.err").open("wb") as err:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            ended = 0
            for line in process.stdout:
                copy.write(line)
                if not line.startswith("{"):
                    continue
                event = json.loads(line).get("event")
                if event == "sync.arch.failed":
                    raise MirrordFailed(f"mirrord run: an arch failed: {line.strip()}")
                if event == "sync.arch.done":
                    ended += 1
                    if ended % per_pass == 0:
                        cpu = measure.tree_cpu_seconds(process.pid)
                        marks.append(PassMark(cpu, time.monotonic(), mark()))
                        if len(marks) == passes:
                            process.send_signal(signal.SIGTERM)
            code = process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
    if len(marks) < passes:
        raise MirrordFailed(f"mirrord run exited {code} after {len(marks)} of {passes} passes")
    return marks, " ".join(argv)
