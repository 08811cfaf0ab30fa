"""Check the published releases trees the way a downloader would: sidecars and yaml first.

For each releases directory mirrord has published (it has a manifest): the
published ``latest-releases.yaml`` and sidecars are read and joined as at
sync time, and every file they describe is hashed and checked (size, sha256,
sha512). Files that nothing describes are compared with the manifest (size
and sha256 recorded when they were mirrored) and reported as checked by
size + Last-Modified only. ``latest-stable`` must name a published branch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mirrord.alpine.latestreleases import LATEST_RELEASES, ReleaseEntry, parse_latest_releases
from mirrord.alpine.sidecars import (
    FileDigester,
    check_file,
    expectations,
    parse_sidecar,
    sidecar_of,
)
from mirrord.core.errors import MirrordError
from mirrord.storage.durable import hash_file
from mirrord.storage.treestate import TreeState

LATEST_STABLE = "latest-stable"


@dataclass
class ReleasesReport:
    directories: int = 0
    files: int = 0
    bytes: int = 0
    verified: int = 0  # files a sidecar or yaml entry bound, checked against it
    unverified: list[str] = field(default_factory=list)  # size + Last-Modified only
    latest_stable: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _published_files(base: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory, _dirs, names in os.walk(base):
        for name in names:
            if not name.startswith("."):
                path = Path(directory, name)
                found[str(path.relative_to(base))] = path
    return found


def _check_directory(root: Path, directory: str, state: TreeState, report: ReleasesReport) -> None:
    base = root / directory
    manifest = state.load(directory)
    files = _published_files(base)
    branch, _, arch = directory.split("/")
    entries: tuple[ReleaseEntry, ...] = ()
    sidecars: dict[str, dict[str, dict[str, str]]] = {}
    for relpath, path in files.items():
        sub, _, name = relpath.rpartition("/")
        where = f"{directory}/{relpath}"
        if name == LATEST_RELEASES and not sub:
            entries = parse_latest_releases(path.read_text(), where, branch=branch, arch=arch)
        elif (found := sidecar_of(name)) is not None:
            target, algorithm = found
            promised = parse_sidecar(path.read_bytes(), where, algorithm, target)
            sidecars.setdefault(sub, {}).setdefault(target, {})[algorithm] = promised
    for sub in sorted({p.rpartition("/")[0] for p in files}):
        names = [p.rpartition("/")[2] for p in files if p.rpartition("/")[0] == sub]
        where = f"{directory}/{sub}".rstrip("/")
        joined = expectations(where, names, sidecars.get(sub, {}), entries if not sub else ())
        for name, expected in joined.items():
            relpath = f"{sub}/{name}" if sub else name
            digester = FileDigester()
            hash_file(files[relpath], digester.feed)
            digest = digester.finish()
            report.files += 1
            report.bytes += digest.size
            if expected.sources:
                check_file(f"{directory}/{relpath}", expected, digest)
                report.verified += 1
                continue
            report.unverified.append(f"{directory}/{relpath}")
            recorded = manifest.files.get(relpath)
            if recorded is None:
                report.problems.append(f"{directory}/{relpath}: not in the manifest")
            elif (recorded.sha256, recorded.size) != (digest.sha256, digest.size):
                report.problems.append(
                    f"{directory}/{relpath}: changed since it was mirrored "
                    f"(sha256 {digest.sha256}, recorded {recorded.sha256})"
                )


def check_releases(root: Path, state: TreeState, top_files: tuple[str, ...]) -> ReleasesReport:
    report = ReleasesReport()
    for name in top_files:
        if (root / name).is_file():
            report.files += 1
            report.bytes += (root / name).stat().st_size
            report.unverified.append(name)
    for directory in state.directories():
        if not (root / directory).is_dir():
            report.problems.append(f"{directory}: published before, missing now")
            continue
        report.directories += 1
        try:
            _check_directory(root, directory, state, report)
        except (MirrordError, OSError) as error:
            report.problems.append(f"{directory}: {error}")
    try:
        target = os.readlink(root / LATEST_STABLE)
    except FileNotFoundError:
        return report
    report.latest_stable = target
    if "/" in target or not (root / target / "releases").is_dir():
        report.problems.append(f"{LATEST_STABLE} -> {target}: not a published releases branch")
    return report
