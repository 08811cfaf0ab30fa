"""Shared test helpers: configs, a log capture, a one-pass sync, tree checks."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from structlog.typing import FilteringBoundLogger

from mirrord.alpine.apkpackage import digest_bytes
from mirrord.alpine.signing import Keyring
from mirrord.core.clock import Clock
from mirrord.core.config import Config
from mirrord.core.config.parse import parse_config
from mirrord.core.logs import make_logger
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.origin import OriginServer
from mirrord.demo.repogen import OriginTree
from mirrord.publish.treecheck import TreeReport, check_tree
from mirrord.sync.runtime import open_runtime
from mirrord.sync.status import ArchResult

FIXTURES = Path(__file__).parent / "fixtures" / "alpine"
REPO_ROOT = Path(__file__).parent.parent


@dataclass
class LogCapture:
    stream: io.StringIO = field(default_factory=io.StringIO)

    def logger(self) -> FilteringBoundLogger:
        return make_logger("debug", "json", stream=self.stream)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for line in self.stream.getvalue().splitlines():
            record = json.loads(line)
            if name is None or record.get("event") == name:
                found.append(record)
        return found


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_dict(
    tmp: Path, origin_url: str, keys: Path, repositories: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "origin": {"url": origin_url, "keys": str(keys)},
        "repositories": repositories,
        "storage": {"path": str(tmp / "storage")},
        "publish": {"path": str(tmp / "published"), "grace": 3600},
        # missing_grace 0: a 404 fails the arch at once, unless a test says otherwise
        "fetch": {
            "concurrency": 8,
            "read_timeout": 5,
            "attempts": 3,
            "processes": 0,
            "missing_grace": 0,
        },
        "metrics": {"listen": False},
        "control": {"socket": False},
    }
    return deep_merge(base, extra)


def make_config(
    tmp: Path, origin_url: str, keys: Path, repositories: list[dict[str, Any]], **extra: Any
) -> Config:
    return parse_config(config_dict(tmp, origin_url, keys, repositories, **extra))


async def sync_once(
    config: Config,
    log: FilteringBoundLogger,
    *,
    clock: Clock | None = None,
    force: frozenset[ArchKey] = frozenset(),
    metrics: Metrics | None = None,
) -> list[ArchResult]:
    async with open_runtime(config, log=log, clock=clock, metrics=metrics) as runtime:
        return await runtime.engine.run_pass(None, force)


def repositories(*keys: ArchKey) -> list[dict[str, Any]]:
    """The ``repositories`` config list covering exactly these arches."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for key in keys:
        grouped.setdefault((key.branch, key.repo), []).append(key.arch)
    return [{"branch": b, "repos": [r], "arches": arches} for (b, r), arches in grouped.items()]


@dataclass
class Mirror:
    """A test world: an origin tree served on loopback, trusted keys, a log capture."""

    tmp: Path
    tree: OriginTree
    origin: OriginServer
    keys: Path
    logs: LogCapture

    def config_data(self, *keys: ArchKey, **extra: Any) -> dict[str, Any]:
        return config_dict(self.tmp, self.origin.url, self.keys, repositories(*keys), **extra)

    def config(self, *keys: ArchKey, **extra: Any) -> Config:
        return parse_config(self.config_data(*keys, **extra))

    def config_file(self, *keys: ArchKey, **extra: Any) -> Path:
        path = self.tmp / "mirrord.yaml"
        path.write_text(yaml.safe_dump(self.config_data(*keys, **extra)))
        return path

    async def sync(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        force: frozenset[ArchKey] = frozenset(),
        metrics: Metrics | None = None,
    ) -> list[ArchResult]:
        return await sync_once(
            config, self.logs.logger(), clock=clock, force=force, metrics=metrics
        )


async def spawn_mirrord(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.DEVNULL,
) -> asyncio.subprocess.Process:
    """A real ``mirrord`` process (python -m mirrord.shell.cli) from the repository root."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirrord.shell.cli",
        *args,
        env=dict(env) if env is not None else None,
        cwd=REPO_ROOT,
        stdout=stdout,
        stderr=stderr,
    )


def run_mirrord(*args: str) -> subprocess.CompletedProcess[str]:
    """A real ``mirrord`` command (python -m mirrord.shell.cli), run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "mirrord.shell.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data)))
    return path


def check_published(config: Config) -> TreeReport:
    return check_tree(config.publish.path, config.arch_keys(), Keyring.load(config.origin.keys))


def temp_leftovers(*roots: Path) -> list[str]:
    found: list[str] = []
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            for name in files:
                if name.startswith(".mirrord-tmp-") or Path(directory).name == "tmp":
                    found.append(os.path.join(directory, name))
    return found


def stored_objects(storage: Path) -> dict[str, int]:
    """Every object in the store, by key, of both kinds: size."""
    found: dict[str, int] = {}
    for kind, prefix in (("sha256", ""), ("apk", "apk:")):
        for path in (storage / "objects" / kind).glob("*/*"):
            if path.is_file():
                found[prefix + path.name] = path.stat().st_size
    return found


def store_totals(state_db: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """The store's kept (objects, bytes) from state.db, and the same counted over every row."""
    with contextlib.closing(sqlite3.connect(state_db)) as db:
        kept = db.execute("SELECT objects, bytes FROM store_totals WHERE id = 0").fetchone()
        counted = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects").fetchone()
    return (int(kept[0]), int(kept[1])), (int(counted[0]), int(counted[1]))


def raw_streams(blob: bytes) -> list[bytes]:
    """An independent split of concatenated gzip members, for cross-checking."""
    parts: list[bytes] = []
    while blob:
        inflater = zlib.decompressobj(31)
        inflater.decompress(blob)
        used = len(blob) - len(inflater.unused_data)
        parts.append(blob[:used])
        blob = blob[used:]
    return parts


def package_key_of(data: bytes) -> str:
    """The store key of a package's bytes."""
    return digest_bytes("package", data).key


async def until(condition: Callable[[], Any], seconds: float, what: str) -> None:
    """Look again every 20 ms (files on disk, keys in etcd) until true, at most ``seconds``."""

    async def holds() -> bool:
        result = condition()
        return bool(await result if asyncio.iscoroutine(result) else result)

    try:
        async with asyncio.timeout(seconds):
            # Files other processes write, keys in etcd: no event here to wait on.
            while not await holds():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {seconds} s: {what}") from None


def pipe_without_reader() -> int:
    """The write end of a pipe whose read end is already closed (a reader that went away)."""
    read, write = os.pipe()
    os.close(read)
    return write
