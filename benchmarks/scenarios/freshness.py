"""Scenario: how soon a new index at a live origin is live on the mirror, push vs polling.

A live origin (nginx serving a tree this harness rewrites) produces a new
generation of one arch every ``freshness_spacing`` seconds: one new small
package and a newly signed index, renamed into place. With push, the origin
side then publishes Alpine's MQTT message (``v3.20/main/x86_64`` on
``rsync/<origin>/v3.20/x86_64``) to a local mosquitto that ``mirrord run``
subscribes to; polling only, the daemon's ``interval`` alone finds it. A
thread watches the published index (stat every ms, digest when it changed)
and records when each generation's bytes went live. A generation's lag runs
from the moment its index was written at the origin to the moment that index
or a later one was live on the mirror (polling may skip generations).
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks import mirrordrun
from benchmarks.context import Bench
from benchmarks.mirrordrun import BRANCH
from benchmarks.results import GoalCheck, ScenarioResult, Table, fmt, median
from benchmarks.servers import LoggedNginx
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import OriginTree, simple_specs
from tests.mosquitto import Mosquitto

KEY = ArchKey(BRANCH, "main", "x86_64")
TOPIC = f"rsync/origin.bench/{KEY.branch}/{KEY.arch}"
BASE_PACKAGES = 20  # the arch's size before the first new generation
GOAL_SECONDS = 2.0  # push: p99 below this plus the transfer time of the new files
WATCH_EVERY = 0.001  # seconds between stats of the published index
LIVE_TIMEOUT = 60.0


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else float("nan")


class IndexWatch:
    """A thread noting when each generation's index went live in the published tree."""

    def __init__(self, path: Path, generations: dict[str, int]) -> None:
        self.path = path
        self.generations = generations  # sha256 of an index -> its generation
        self.live: dict[int, float] = {}  # generation -> first time.time() seen live
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> IndexWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        seen: tuple[int, int, int] | None = None
        while not self._stop.is_set():
            try:
                info = os.stat(self.path)
                stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
                if stamp != seen:
                    digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
                    now = time.time()
                    seen = stamp
                    generation = self.generations.get(digest)
                    if generation is not None:
                        with self._changed:
                            self.live.setdefault(generation, now)
                            self._changed.notify_all()
            except FileNotFoundError:
                pass
            time.sleep(WATCH_EVERY)  # a poll period, not a wait for an event we could get

    def wait_live(self, generation: int, timeout: float = LIVE_TIMEOUT) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: max(self.live, default=-1) >= generation, timeout
            ):
                raise RuntimeError(f"generation {generation} not live within {timeout} s")


class OriginAnnouncer:
    """The origin side of push: Alpine's message after each new index (QoS 1, acknowledged)."""

    def __init__(self, port: int) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def announce(self) -> None:
        self._client.publish(TOPIC, f"{KEY}\n", qos=1).wait_for_publish(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass(frozen=True)
class ModeResult:
    lags: list[float]
    syncs: list[float]  # sync.arch.done seconds of the published syncs (the transfer)
    skipped: int  # generations never live by themselves (a later one came first)
    command: str
    config: str


def _run_mode(
    bench: Bench, directory: Path, nginx: LoggedNginx, broker: Mosquitto | None, interval: int
) -> ModeResult:
    sizes = bench.sizes
    tree = OriginTree(nginx.root, bench.sets.key)
    generations: dict[str, int] = {}

    def write(generation: int) -> float:
        specs = simple_specs("fresh", BASE_PACKAGES + generation, payload=4096)
        index = tree.put(KEY, specs)
        written = time.time()
        generations[hashlib.sha256(index).hexdigest()] = generation
        return written

    write(0)
    setup = mirrordrun.MirrordSetup(
        origin_url=nginx.url,
        keys=bench.sets.public_keys(),
        arches=(KEY,),
        directory=directory / "mirrord",
        fetch=mirrordrun.default_fetch(sizes.fetch_concurrency, processes=0),
        interval=interval,
    )
    logs = directory.parent / "logs" / directory.name  # kept after the run (Bench.tidy)
    logs.mkdir(parents=True, exist_ok=True)
    config_path = setup.write(logs / "daemon.yaml")
    if broker is not None:
        config: dict[str, Any] = yaml.safe_load(config_path.read_text())
        config["push"] = {"mqtt": {"url": broker.url, "topics": ["rsync/origin.bench/#"]}}
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [mirrordrun.mirrord_binary(), "run", "--config", str(config_path)]
    written: dict[int, float] = {}
    announcer = OriginAnnouncer(broker.port) if broker is not None else None
    watch_path = setup.published.joinpath(*KEY.parts, "APKINDEX.tar.gz")
    with (
        (logs / "daemon.out").open("wb") as out,
        IndexWatch(watch_path, generations) as watch,
    ):
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            watch.wait_live(0)
            if broker is not None:  # the first message must find the daemon subscribed
                _wait_for_line(logs / "daemon.out", b'"push.connected"')
            for generation in range(1, sizes.freshness_generations + 1):
                time.sleep(sizes.freshness_spacing)  # the origin's pace, not a wait for mirrord
                written[generation] = write(generation)
                if announcer is not None:
                    announcer.announce()
            watch.wait_live(sizes.freshness_generations)
        finally:
            if announcer is not None:
                announcer.close()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    lags = []
    for generation, at in written.items():
        live = min(t for g, t in watch.live.items() if g >= generation)
        lags.append(live - at)
    events = mirrordrun.read_events(logs / "daemon.out")
    syncs = [
        float(e["seconds"])
        for e in events
        if e.get("event") == "sync.arch.done" and e.get("outcome") == "published"
    ]
    skipped = len([g for g in written if g not in watch.live])
    return ModeResult(lags, syncs[1:], skipped, " ".join(argv), config_path.read_text())


def _wait_for_line(path: Path, needle: bytes, timeout: float = LIVE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{needle!r} not in {path} within {timeout} s")
        time.sleep(0.01)  # the daemon's log is a file: read it again


def freshness(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    directory = bench.scenario_dir("freshness")
    results: dict[str, ModeResult] = {}
    broker = Mosquitto(directory / "mosquitto")
    broker.start()
    try:
        with LoggedNginx(directory / "origin", directory / "nginx") as nginx:
            for mode, interval in (("push", 3600), ("poll", sizes.freshness_poll_interval)):
                results[mode] = _run_mode(
                    bench, directory / mode, nginx, broker if mode == "push" else None, interval
                )
                lags = results[mode].lags
                bench.progress(
                    f"freshness {mode}: p50 {percentile(lags, 0.5):.3f} s, "
                    f"p99 {percentile(lags, 0.99):.3f} s over {len(lags)} generations"
                )
    finally:
        broker.stop()
    push, poll = results["push"], results["poll"]

    def row(name: str, pick: Any, digits: int = 3, ratio: bool = True) -> tuple[str, ...]:
        a, b = pick(push), pick(poll)
        return (name, fmt(a, digits), fmt(b, digits), f"{b / a:.1f}x" if ratio and a > 0 else "")

    rows = (
        row("generations", lambda r: float(len(r.lags)), 0, ratio=False),
        row("lag p50 s", lambda r: percentile(r.lags, 0.5)),
        row("lag p99 s", lambda r: percentile(r.lags, 0.99)),
        row("lag max s", lambda r: max(r.lags)),
        row("lag mean s", lambda r: sum(r.lags) / len(r.lags)),
        row("sync s (median of published syncs)", lambda r: median(r.syncs), ratio=False),
        row("generations never live by themselves", lambda r: float(r.skipped), 0, ratio=False),
    )
    poll_name = f"polling only (interval {sizes.freshness_poll_interval} s)"
    table = Table(("figure", "push (MQTT)", poll_name, "polling / push"), rows)
    transfer = percentile(push.syncs, 0.99)
    p99 = percentile(push.lags, 0.99)
    goal = GoalCheck(
        f"with push, p99 freshness under {GOAL_SECONDS:g} s plus the transfer time "
        "(p99 of the published syncs' seconds)",
        f"p99 {p99:.3f} s against {GOAL_SECONDS + transfer:.3f} s",
        p99 < GOAL_SECONDS + transfer,
    )
    return ScenarioResult(
        name="freshness",
        title="Freshness: origin index written to index live on the mirror",
        summary=(
            f"A live origin (nginx) gets a new generation of one arch every "
            f"{sizes.freshness_spacing:g} s, {sizes.freshness_generations} generations per mode "
            f"(each adds one ~4 KB package to {BASE_PACKAGES} and a newly signed index). "
            "With push, the origin side publishes Alpine's message (QoS 1, to a local "
            "mosquitto) after writing; `mirrord run` subscribes (its interval 3600 s). "
            f"Polling only: `interval: {sizes.freshness_poll_interval}`, no push. Lag: from "
            "`time.time()` right after the index was renamed into place at the origin to the "
            "first stat (every ms) that found that index or a later one in the published tree. "
            "p99 is the nearest rank (with 50 generations, the worst one)."
        ),
        tables=(table,),
        notes=(
            "Polling lag is about half the interval on average plus the sync; push removes "
            "the interval: what remains is the message, the index GET, one package, "
            "verification and the publish.",
        ),
        commands=(push.command, f"push config:\n{push.config}", f"poll config:\n{poll.config}"),
        goals=(goal,),
        figures={
            "push": {"p50": percentile(push.lags, 0.5), "p99": p99},
            "poll": {"p50": percentile(poll.lags, 0.5), "p99": percentile(poll.lags, 0.99)},
        },
    )
