"""Data sets: names, versions, dependencies and sizes from a real Alpine index.

Every set is a deterministic list of ``PackageSpec`` (a recipe, pure) built
with mirrord's own generator and cached under the work directory, keyed by a
digest of the recipe and the signing key, so a set is built once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mirrord.alpine.apkindex import read_index_archive, split_gzip_streams
from mirrord.alpine.signing import Keyring
from mirrord.alpine.tarlite import iter_members
from mirrord.demo.repogen import PackageSpec, SigningKey, build_package, index_text

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_INDEX = REPO_ROOT / "tests" / "fixtures" / "alpine" / "v3.16-main-x86_64-APKINDEX.tar.gz"
REAL_KEYS = REPO_ROOT / "tests" / "fixtures" / "alpine" / "keys"
GENERATOR_VERSION = 1  # part of every cache key: bump when recipes change meaning
OVERHEAD = 1500  # about what a package adds around its payload (signature, control, tar)
MIN_PAYLOAD = 64


@dataclass(frozen=True)
class RealPackage:
    name: str
    version: str
    size: int
    depends: tuple[str, ...]


def read_real_index(path: Path = REAL_INDEX, keys: Path = REAL_KEYS) -> list[RealPackage]:
    """The real index, verified like mirrord does, with each entry's D: line."""
    blob = path.read_bytes()
    archive = read_index_archive(
        blob,
        Keyring.load(keys),
        allow_untrusted=False,
        max_index_bytes=1 << 28,
        max_package_bytes=1 << 32,
    )
    depends = _depends(_apkindex_text(blob))
    return [
        RealPackage(e.name, e.version, e.size, depends.get((e.name, e.version), ()))
        for e in archive.entries
    ]


def _apkindex_text(blob: bytes) -> str:
    for member in iter_members(split_gzip_streams(blob, 1 << 28)[-1].data):
        if member.name == "APKINDEX":
            return bytes(member.data).decode()
    raise ValueError("no APKINDEX member")


def _depends(text: str) -> dict[tuple[str, str], tuple[str, ...]]:
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if line[1:2] == ":")
        if "P" in fields and "V" in fields:
            found[(fields["P"], fields["V"])] = tuple(fields.get("D", "").split())
    return found


# --- recipes (pure) -------------------------------------------------------------------


def _stratified(items: Sequence[RealPackage], count: int) -> list[RealPackage]:
    """``count`` picks spread evenly over ``items`` sorted by size: the same distribution."""
    ordered = sorted(items, key=lambda p: (p.size, p.name))
    n = len(ordered)
    return [ordered[int((j + 0.5) * n / count)] for j in range(count)]


def _spec(real: RealPackage, name: str, size: int, salt: int) -> PackageSpec:
    return PackageSpec(
        name=name,
        version=real.version,
        payload=max(MIN_PAYLOAD, size - OVERHEAD),
        seed=salt * 10_000_019 + zlib.crc32(name.encode()),
        depends=real.depends,
    )


def _unique_names(picks: Sequence[RealPackage]) -> list[str]:
    """The picks' names, a repeated one suffixed (``-b2``, ...) so no two names, and no
    name and real package, are the same."""
    used = {pick.name for pick in picks}
    seen: set[str] = set()
    names: list[str] = []
    for pick in picks:
        name, count = pick.name, 1
        while name in seen or (name != pick.name and name in used):
            count += 1
            name = f"{pick.name}-b{count}"
        seen.add(name)
        names.append(name)
    return names


def _limited(real: Sequence[RealPackage], max_size: int | None) -> list[RealPackage]:
    return [p for p in real if max_size is None or p.size <= max_size]


def sampled_specs(
    real: Sequence[RealPackage], count: int, *, max_size: int | None, salt: int
) -> list[PackageSpec]:
    """Names and sizes spread over the real distribution (or its part up to max_size)."""
    picks = _stratified(_limited(real, max_size), count)
    return [_spec(p, n, p.size, salt) for p, n in zip(picks, _unique_names(picks), strict=True)]


def small_heavy_specs(
    real: Sequence[RealPackage], count: int, *, fraction: float, max_size: int | None, salt: int
) -> list[PackageSpec]:
    """``count`` packages drawn from the smallest ``fraction`` of the real index."""
    ordered = sorted(_limited(real, max_size), key=lambda p: (p.size, p.name))
    return sampled_specs(
        ordered[: max(1, int(len(ordered) * fraction))], count, max_size=None, salt=salt
    )


def large_specs(
    real: Sequence[RealPackage], count: int, size: int, *, salt: int
) -> list[PackageSpec]:
    """The names of the largest real packages, each ``size`` bytes."""
    picks = sorted(real, key=lambda p: (-p.size, p.name))[:count]
    return [_spec(p, p.name, size, salt) for p in picks]


def tiny_specs(
    real: Sequence[RealPackage], count: int, payload: int, *, salt: int
) -> list[PackageSpec]:
    """``count`` small packages named after real ones (suffixed when they wrap around)."""
    ordered = sorted(real, key=lambda p: p.name)
    picks = [ordered[i % len(ordered)] for i in range(count)]
    return [
        PackageSpec(
            name=name,
            version=pick.version,
            payload=payload + (i * 37) % max(payload, 1),
            seed=salt * 10_000_019 + i,
            depends=pick.depends,
        )
        for i, (pick, name) in enumerate(zip(picks, _unique_names(picks), strict=True))
    ]


@dataclass(frozen=True)
class Delta:
    """An origin update: these names removed, these rebuilt (pkgrel + 1), these added."""

    removed: tuple[str, ...]
    rebuilt: tuple[PackageSpec, ...]  # the new builds
    added: tuple[PackageSpec, ...]


def plan_delta(
    base: Sequence[PackageSpec],
    real: Sequence[RealPackage],
    *,
    added: int,
    rebuilt: int,
    removed: int,
    salt: int,
) -> Delta:
    """Spread the rebuilt and removed packages evenly over ``base``; add unused real names."""
    step = max(1, len(base) // max(1, rebuilt + removed))
    chosen = [base[i] for i in range(0, len(base), step)][: rebuilt + removed]
    taken = {spec.name for spec in base}
    fresh = [p for p in real if p.name not in taken]
    return Delta(
        removed=tuple(spec.name for spec in chosen[rebuilt:]),
        rebuilt=tuple(spec.bumped() for spec in chosen[:rebuilt]),
        added=tuple(sampled_specs(fresh, added, max_size=None, salt=salt)),
    )


# --- built sets, cached ---------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    spec: PackageSpec
    size: int
    stanza: str  # this package's APKINDEX entry, as the generator writes it
    path: Path  # the built .apk in the cache

    @property
    def filename(self) -> str:
        return self.spec.filename


@dataclass(frozen=True)
class DataSet:
    name: str
    directory: Path
    packages: tuple[Package, ...]

    @property
    def total_bytes(self) -> int:
        return sum(p.size for p in self.packages)


def load_key(cache: Path) -> SigningKey:
    """The benchmarks' signing key, generated once and kept beside the sets it signed."""
    pem, name = cache / "signing-key.pem", cache / "signing-key.name"
    if pem.exists() and name.exists():
        return SigningKey.from_private_pem(name.read_text().strip(), pem.read_bytes())
    cache.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate("mirrord-bench")
    pem.write_bytes(key.private_pem())
    name.write_text(key.name + "\n")
    return key


def _digest(specs: Sequence[PackageSpec], key: SigningKey) -> str:
    text = json.dumps([GENERATOR_VERSION, key.name, [asdict(s) for s in specs]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _spec_from(data: dict[str, Any]) -> PackageSpec:
    return PackageSpec(
        name=str(data["name"]),
        version=str(data["version"]),
        arch=str(data["arch"]),
        payload=int(data["payload"]),
        seed=int(data["seed"]),
        legacy=bool(data["legacy"]),
        depends=tuple(str(d) for d in data["depends"]),
        origin=None if data["origin"] is None else str(data["origin"]),
    )


def _load(name: str, directory: Path) -> DataSet:
    records = json.loads((directory / "manifest.json").read_text())
    packages = tuple(
        Package(
            spec=(spec := _spec_from(r["spec"])),
            size=r["size"],
            stanza=r["stanza"],
            path=directory / "packages" / spec.filename,
        )
        for r in records
    )
    return DataSet(name, directory, packages)


def build_set(
    cache: Path,
    name: str,
    specs: Sequence[PackageSpec],
    key: SigningKey,
    progress: Callable[[str], None],
) -> DataSet:
    """The built set for this recipe: from the cache, or built now (and stale ones removed)."""
    directory = cache / f"{name}-{_digest(specs, key)}"
    if (directory / "manifest.json").exists():
        return _load(name, directory)
    for stale in cache.glob(f"{name}-*"):
        if stale.is_dir() and len(stale.name) == len(name) + 17:
            shutil.rmtree(stale)
    partial = cache / f".{directory.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "packages").mkdir(parents=True)
    progress(f"building data set {name}: {len(specs)} packages")
    records: list[dict[str, object]] = []
    for spec in specs:
        built = build_package(spec, key)
        (partial / "packages" / spec.filename).write_bytes(built.data)
        records.append(
            {"spec": asdict(spec), "size": len(built.data), "stanza": index_text([built])}
        )
    (partial / "manifest.json").write_text(json.dumps(records))
    partial.rename(directory)
    return _load(name, directory)
