"""A generated mirror state the size of Alpine's real tree, for ``benchmarks.scale``.

Syncing two million packages through mirrord would take the benchmark's whole
budget, so the state a finished sync leaves is written directly, with the
project's own pieces: real-format signed packages (``mirrord.demo.repogen``)
stored under ``objects/sha256/<xx>/<digest>`` read-only, hard-linked into the
published tree, one signed index per arch stored and published, and state.db
filled through ``StateDB`` (objects, one published snapshot per arch, current).
A small share of objects is stored but listed nowhere: garbage for GC to find.
Packages are tiny (a 16-byte payload): the figures are about object counts,
not bytes.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mirrord.core.model import ArchKey, PublishedFile
from mirrord.demo.repogen import BuiltPackage, PackageSpec, SigningKey, build_index, build_package
from mirrord.storage.statedb import StateDB

BRANCHES = tuple(f"v3.{minor}" for minor in range(12, 23))  # v3.12 .. v3.22
REPOS = ("main", "community")
ARCHES = (
    "x86_64",
    "x86",
    "aarch64",
    "armhf",
    "armv7",
    "ppc64le",
    "s390x",
    "riscv64",
    "loongarch64",
)
PAYLOAD = 16
GARBAGE_EVERY = 100  # one stored object in a hundred is listed by no snapshot
STORED_AGO = 2 * 86400.0  # objects look old enough for GC's grace period
RECORD_CHUNK = 100_000


def all_arches() -> list[ArchKey]:
    """Every branch x repo x arch: 198 indexes, about what Alpine's tree has."""
    return [ArchKey(b, r, a) for b in BRANCHES for r in REPOS for a in ARCHES]


@dataclass(frozen=True)
class ArchJob:
    key: ArchKey
    packages: int
    storage: Path
    published: Path
    origin: Path
    key_pem: bytes
    key_name: str


@dataclass(frozen=True)
class ArchState:
    key: ArchKey
    objects: list[tuple[str, int, str | None]]
    files: list[PublishedFile]
    index_sha256: str
    index_size: int


def _write_object(objects: str, data: bytes) -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    fd = os.open(f"{objects}/{sha256[:2]}/{sha256}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return sha256


def _specs(key: ArchKey, count: int) -> Iterator[PackageSpec]:
    stem = f"{key.repo}-{key.branch.replace('.', '')}"
    base = zlib.crc32(str(key).encode()) * 10_000_000
    for i in range(count):
        yield PackageSpec(
            name=f"{stem}-p{i:07d}", version="1.0-r0", arch=key.arch, payload=PAYLOAD, seed=base + i
        )


def generate_arch(job: ArchJob) -> ArchState:
    """Store, publish and index one arch's packages (runs in a worker process)."""
    signing = SigningKey.from_private_pem(job.key_name, job.key_pem)
    objects = str(job.storage / "objects" / "sha256")
    directory = job.published.joinpath(*job.key.parts)
    directory.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, int, str | None]] = []
    files: list[PublishedFile] = []
    listed: list[BuiltPackage] = []
    for number, spec in enumerate(_specs(job.key, job.packages)):
        package = build_package(spec, None, stored=True)
        sha256 = _write_object(objects, package.data)
        rows.append((sha256, len(package.data), package.checksum))
        if number % GARBAGE_EVERY == GARBAGE_EVERY - 1:
            continue
        os.link(f"{objects}/{sha256[:2]}/{sha256}", f"{directory}/{spec.filename}")
        files.append(PublishedFile(spec.filename, sha256, len(package.data), spec.name))
        listed.append(package)
    index = build_index(listed, signing, description=f"{job.key} generated at scale")
    index_sha256 = _write_object(objects, index)
    rows.append((index_sha256, len(index), None))
    (directory / "APKINDEX.tar.gz").write_bytes(index)
    origin = job.origin.joinpath(*job.key.parts)
    origin.mkdir(parents=True, exist_ok=True)
    (origin / "APKINDEX.tar.gz").write_bytes(index)
    return ArchState(job.key, rows, files, index_sha256, len(index))


def generate(
    storage: Path,
    published: Path,
    origin: Path,
    signing: SigningKey,
    total: int,
    *,
    now: float,
    workers: int | None = None,
) -> int:
    """Generate about ``total`` objects over every arch (``workers`` processes, one per core
    by default); returns how many were stored."""
    (storage / "tmp").mkdir(parents=True)
    objects = storage / "objects" / "sha256"
    for first in range(256):
        (objects / f"{first:02x}").mkdir(parents=True)
    keys = all_arches()
    per = max(1, total // len(keys))
    jobs = [
        ArchJob(key, per, storage, published, origin, signing.private_pem(), signing.name)
        for key in keys
    ]
    db = StateDB.open(storage / "state.db")
    rows: list[tuple[str, int, str | None]] = []
    try:
        with ProcessPoolExecutor(workers) as pool:
            for state in pool.map(generate_arch, jobs):
                record_snapshot(db, state, now)
                rows.extend(state.objects)
        # In digest order, in large transactions: random inserts into a two-million-row
        # primary key, one arch at a time, were most of the generation's time.
        rows.sort()
        for start in range(0, len(rows), RECORD_CHUNK):
            db.record_objects(rows[start : start + RECORD_CHUNK], now - STORED_AGO)
    finally:
        db.close()
    return len(rows)


def record_snapshot(db: StateDB, state: ArchState, now: float) -> None:
    """The published snapshot a finished sync of the arch leaves in state.db."""
    snapshot = db.add_snapshot(
        str(state.key),
        created_at=now - STORED_AGO,
        index_sha256=state.index_sha256,
        index_size=state.index_size,
        last_modified=None,
        etag=None,
        last_modified_header=None,
        description=f"{state.key} generated at scale",
        files=state.files,
        status="published",
    )
    db.set_current(str(state.key), snapshot, now - STORED_AGO)


def arch_config(keys: Sequence[ArchKey]) -> list[dict[str, object]]:
    """The ``repositories:`` section listing ``keys``."""
    by_branch: dict[str, list[ArchKey]] = {}
    for key in keys:
        by_branch.setdefault(key.branch, []).append(key)
    return [
        {
            "branch": branch,
            "repos": sorted({k.repo for k in ks}),
            "arches": sorted({k.arch for k in ks}),
        }
        for branch, ks in by_branch.items()
    ]
