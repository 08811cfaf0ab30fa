"""``mirrord demo``: the whole job on an embedded default, offline.

Generates a signed, real-format Alpine repository (a few hundred packages, two
arches, two repos) under the demo directory, serves it from a local origin on
127.0.0.1, syncs and publishes it with the normal pipeline, checks the
published tree like an apk client would, and says what happened. Running it
again reuses what is there: nothing is downloaded twice.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.signing import Keyring
from mirrord.core.config import Config
from mirrord.core.config.parse import parse_config
from mirrord.core.model import ArchKey
from mirrord.core.units import format_bytes
from mirrord.demo.origin import OriginServer
from mirrord.demo.releasegen import write_release, write_top
from mirrord.demo.repogen import OriginTree, PackageSpec, SigningKey
from mirrord.publish.releasecheck import ReleasesReport, check_releases
from mirrord.publish.treecheck import check_tree
from mirrord.storage.treestate import TreeState
from mirrord.sync.releases import TreePass
from mirrord.sync.runtime import open_runtime
from mirrord.sync.status import ArchResult

BRANCH = "v3.20"
REPOS = {"main": 180, "community": 120}
ARCHES = ("x86_64", "aarch64")
SHARED = 40  # noarch packages: the same bytes in both arches, stored once
KEY_FILE = "origin-signing-key.pem"
RELEASES = ("3.20.2", "3.20.3")


@dataclass(frozen=True)
class DemoLayout:
    root: Path

    @property
    def origin(self) -> Path:
        return self.root / "origin"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def published(self) -> Path:
        return self.root / "published"


def demo_specs(repo: str, count: int, arch: str, seed: int) -> list[PackageSpec]:
    """Packages with Alpine-like names and sizes (log-normal, median ~25 KB)."""
    rng = random.Random(f"{repo}-{seed}")  # noqa: S311 - reproducible demo data
    specs: list[PackageSpec] = []
    for i in range(count):
        shared = repo == "main" and i < SHARED
        size = min(int(math.exp(rng.gauss(math.log(25_000), 1.1))), 3_000_000)
        specs.append(
            PackageSpec(
                name=f"{repo}-pkg{i:03d}" + ("-doc" if shared else ""),
                version=f"{1 + i % 5}.{i % 11}.{i % 3}-r{i % 4}",
                arch="noarch" if shared else arch,
                payload=max(size, 256),
                seed=7_000_000 + i if shared else zlib.crc32(f"{repo}/{arch}/{i}".encode()),
                depends=(f"{repo}-pkg{(i * 7) % count:03d}",) if i % 3 == 0 else (),
            )
        )
    return specs


def build_origin(layout: DemoLayout) -> tuple[SigningKey, bool]:
    """Create the signed origin tree once; returns (key, whether it was generated now)."""
    key_path = layout.root / KEY_FILE
    layout.root.mkdir(parents=True, exist_ok=True)
    if key_path.exists() and any(layout.keys.glob("*.rsa.pub")) and layout.origin.exists():
        name = next(layout.keys.glob("*.rsa.pub")).name
        return SigningKey.from_private_pem(name, key_path.read_bytes()), False
    key = SigningKey.generate("mirrord-demo")
    key_path.write_bytes(key.private_pem())
    key_path.chmod(0o600)
    for old in layout.keys.glob("*.pub"):
        old.unlink()
    key.write_public(layout.keys)
    tree = OriginTree(layout.origin, key)
    for repo, count in REPOS.items():
        for arch in ARCHES:
            specs = demo_specs(repo, count, arch, 1)
            tree.put(ArchKey(BRANCH, repo, arch), specs, description=f"{BRANCH}-demo")
    for arch in ARCHES:  # two releases: the older one stays, as on Alpine's servers
        for version in RELEASES:
            write_release(layout.origin, BRANCH, arch, version, size=256 << 10)
    write_top(layout.origin, BRANCH, "https://dl-cdn.alpinelinux.org/alpine/\n")
    return key, True


def demo_config(layout: DemoLayout, origin_url: str) -> Config:
    return parse_config(
        {
            "origin": {"url": origin_url, "keys": str(layout.keys)},
            "repositories": [{"branch": BRANCH, "repos": list(REPOS), "arches": list(ARCHES)}],
            "releases": {"branches": [BRANCH], "arches": "all"},
            "storage": {"path": str(layout.storage)},
            "publish": {"path": str(layout.published), "grace": 3600},
            "fetch": {"concurrency": 16},
            "metrics": {"listen": False},
            "control": {"socket": False},
        }
    )


def _write_reference_config(layout: DemoLayout, config: Config) -> Path:
    path = layout.root / "mirrord.yaml"
    path.write_text(
        "# The configuration the demo used. The origin URL was a local server that\n"
        "# existed only while the demo ran; point origin.url at a real mirror to reuse it.\n"
        f"origin:\n  url: {config.origin.url}\n  keys: {config.origin.keys}\n"
        f"repositories:\n  - branch: {BRANCH}\n    repos: [{', '.join(REPOS)}]\n"
        f"    arches: [{', '.join(ARCHES)}]\n"
        f"storage:\n  path: {config.storage.path}\n"
        f"publish:\n  path: {config.publish.path}\n  grace: 3600\n"
        f"releases:\n  branches: [{BRANCH}]\n  arches: all\n"
    )
    return path


async def run_demo(root: Path, log: FilteringBoundLogger, out: TextIO) -> int:
    layout = DemoLayout(root)
    started = time.monotonic()
    key, generated = await asyncio.to_thread(build_origin, layout)
    generated_in = time.monotonic() - started
    async with OriginServer(layout.origin) as origin:
        config = demo_config(layout, origin.url)
        sync_started = time.monotonic()
        async with open_runtime(config, log=log) as runtime:
            async with asyncio.TaskGroup() as group:  # releases beside packages, as the daemon
                trees = group.create_task(runtime.releases.run_pass())
                results = await runtime.engine.run_pass()
            stored_objects, stored_bytes = await runtime.db.call(runtime.db.object_stats)
        sync_seconds = time.monotonic() - sync_started
        requests = len(origin.package_requests())
    report = check_tree(layout.published, config.arch_keys(), Keyring.load(layout.keys))
    releases = check_releases(layout.published, TreeState(layout.storage), ("MIRRORS.txt",))
    _write_reference_config(layout, config)
    _print_summary(
        out,
        layout,
        key,
        generated,
        generated_in,
        results,
        sync_seconds,
        requests,
        stored_objects,
        stored_bytes,
        report.files,
        report.bytes,
        report.problems,
    )
    _print_releases(out, layout, trees.result(), releases)
    ok = all(r.ok for r in results) and report.ok and trees.result().ok and releases.ok
    return 0 if ok else 1


def _print_releases(
    out: TextIO, layout: DemoLayout, trees: TreePass, check: ReleasesReport
) -> None:
    write = out.write
    for outcome in trees.outcomes:
        note = outcome.error or (
            f"{outcome.fetched} files, {format_bytes(outcome.fetched_bytes)}"
            if outcome.outcome == "published"
            else "nothing new"
        )
        write(f"  {outcome.outcome:<10} {outcome.directory}: {note}\n")
    write(f"  linked     latest-stable -> {trees.latest_stable or '(none)'}\n")
    if check.problems:
        write(f"  CHECK FAILED: {len(check.problems)} problems, first: {check.problems[0]}\n")
    else:
        write(
            f"  checked    {check.directories} releases directories: {check.verified} images "
            f"match their sidecars and latest-releases.yaml; {len(check.unverified)} files "
            "have no checksum (size + Last-Modified only)\n"
        )
    write(f"  try        ls {layout.published}/latest-stable/releases/x86_64\n")


def _print_summary(
    out: TextIO,
    layout: DemoLayout,
    key: SigningKey,
    generated: bool,
    generated_in: float,
    results: list[ArchResult],
    sync_seconds: float,
    requests: int,
    stored_objects: int,
    stored_bytes: int,
    checked_files: int,
    checked_bytes: int,
    problems: list[str],
) -> None:
    fetched = sum(r.fetched for r in results)
    fetched_bytes = sum(r.fetched_bytes for r in results)
    listed = sum(r.packages for r in results)
    write = out.write
    write("mirrord demo\n")
    origin_note = "generated now" if generated else "reused"
    write(f"  origin     {layout.origin} ({origin_note} in {generated_in:.1f} s)\n")
    write(f"  signed by  {key.name} (public key in {layout.keys})\n")
    for result in results:
        note = result.error or f"{result.packages} packages, snapshot {result.snapshot_id}"
        write(f"  {result.outcome:<10} {result.key}: {note}\n")
    rate = fetched_bytes / sync_seconds if sync_seconds > 0 else 0.0
    write(
        f"  fetched    {fetched} package files in {sync_seconds:.2f} s with {requests} downloads "
        f"({format_bytes(fetched_bytes)}, {format_bytes(rate)}/s; a shared noarch package "
        "is downloaded once)\n"
    )
    write(
        f"  stored     {stored_objects} objects, {format_bytes(stored_bytes)} in {layout.storage} "
        f"({listed} listed entries: noarch packages are stored once)\n"
    )
    write(f"  published  {layout.published}\n")
    if problems:
        write(f"  CHECK FAILED: {len(problems)} problems, first: {problems[0]}\n")
    else:
        write(
            f"  checked    every index verifies and all {checked_files} listed files "
            f"({format_bytes(checked_bytes)}) match their size, C: and datahash\n"
        )
    write(f"  try        ls {layout.published}/{BRANCH}/main/x86_64 | head\n")
