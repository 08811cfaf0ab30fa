"""Check a published tree the way an apk client would: index first, then every file.

For each ``<branch>/<repo>/<arch>``: the index verifies against the trusted
keys, and every file it lists exists with the listed size and ``C:`` (and
``datahash`` when declared). Used by ``mirrord verify-tree``, the demo and
the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mirrord.alpine.apkindex import read_index_archive
from mirrord.alpine.apkpackage import PackageDigester, check_package
from mirrord.alpine.signing import Keyring
from mirrord.core.errors import MirrordError
from mirrord.core.model import ArchKey, PackageRef
from mirrord.publish.publisher import INDEX_NAME
from mirrord.storage.durable import hash_file


@dataclass
class TreeReport:
    arches: int = 0
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_file(path: Path, filename: str, checksum: str, size: int) -> str | None:
    """None when the file is what the index says, else what is wrong."""
    digester = PackageDigester(filename)
    try:
        hash_file(path, digester.feed)
        check_package(PackageRef(filename, checksum, size), digester.finish())
    except FileNotFoundError:
        return f"{path}: missing"
    except MirrordError as error:
        return f"{path}: {error}"
    return None


def check_tree(
    root: Path,
    keys: list[ArchKey],
    keyring: Keyring,
    *,
    allow_untrusted: bool = False,
    max_index_bytes: int = 256 << 20,
    max_package_bytes: int = 4 << 30,
) -> TreeReport:
    report = TreeReport()
    for key in keys:
        directory = root.joinpath(*key.parts)
        try:
            blob = (directory / INDEX_NAME).read_bytes()
        except FileNotFoundError:
            report.problems.append(f"{key}: no {INDEX_NAME}")
            continue
        try:
            archive = read_index_archive(
                blob,
                keyring,
                allow_untrusted=allow_untrusted,
                max_index_bytes=max_index_bytes,
                max_package_bytes=max_package_bytes,
                arch=key.arch,
            )
        except MirrordError as error:
            report.problems.append(f"{key}: {error}")
            continue
        report.arches += 1
        for entry in archive.entries:
            problem = check_file(
                directory / entry.filename, entry.filename, entry.checksum, entry.size
            )
            if problem:
                report.problems.append(problem)
            else:
                report.files += 1
                report.bytes += entry.size
    return report
