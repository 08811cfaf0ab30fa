"""The origin tree a scenario serves, and the checks and clean-ups around runs.

A live origin is made of hard links to the cached packages plus one signed
index per arch, so switching it between states (before and after an update)
costs links, not copies, and keeps every file's mtime (rsync's quick check).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data import Package
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import OriginTree, SigningKey, build_index

INDEX_NAME = "APKINDEX.tar.gz"
Layout = Mapping[ArchKey, Sequence[Package]]


class LiveOrigin:
    def __init__(self, root: Path, key: SigningKey) -> None:
        self.root = root
        self._tree = OriginTree(root, key)
        self._key = key
        self._layout: dict[ArchKey, tuple[Package, ...]] = {}

    def arch_dir(self, key: ArchKey) -> Path:
        return self._tree.arch_dir(key)

    def publish(self, layout: Layout) -> None:
        """Make each arch of ``layout`` list exactly its packages (others are left alone)."""
        for key, packages in layout.items():
            directory = self._tree.arch_dir(key)
            directory.mkdir(parents=True, exist_ok=True)
            listed = {p.filename for p in packages}
            if len(listed) != len(packages):
                raise ValueError(f"{key}: two packages share a file name")
            for path in directory.glob("*.apk"):
                if path.name not in listed:
                    path.unlink()
            for package in packages:
                target = directory / package.filename
                if not target.exists():
                    os.link(package.path, target)
            text = "".join(p.stanza for p in packages)
            index = build_index([], self._key, description=f"{key} benchmark", text=text)
            self._tree.write_index(key, index)
            self._layout[key] = tuple(packages)

    def expected(self, keys: Sequence[ArchKey] | None = None) -> dict[str, int]:
        """Relative path -> size of every file a complete mirror of these arches has."""
        files: dict[str, int] = {}
        for key, packages in self._layout.items():
            if keys is not None and key not in keys:
                continue
            prefix = "/".join(key.parts)
            index = self._tree.arch_dir(key) / INDEX_NAME
            files[f"{prefix}/{INDEX_NAME}"] = index.stat().st_size
            for package in packages:
                files[f"{prefix}/{package.filename}"] = package.size
        return files


def warm(root: Path) -> int:
    """Read every file once so every run finds the origin in the page cache."""
    total = 0
    for directory, _dirs, names in os.walk(root):
        for name in names:
            with open(os.path.join(directory, name), "rb") as handle:
                while chunk := handle.read(1 << 20):
                    total += len(chunk)
    return total


@dataclass(frozen=True)
class TreeCheck:
    missing: int
    wrong_size: int
    extra: int

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.wrong_size == 0

    def describe(self) -> str:
        if self.complete and not self.extra:
            return "yes"
        parts = [f"{self.missing} missing"] if self.missing else []
        parts += [f"{self.wrong_size} wrong size"] if self.wrong_size else []
        parts += [f"{self.extra} extra"] if self.extra else []
        return ("yes, " if self.complete else "NO: ") + ", ".join(parts)


def check_tree(root: Path, expected: Mapping[str, int], *, count_extra: bool = True) -> TreeCheck:
    """Is every expected file there with its size (and nothing else under the arch dirs)?"""
    missing = wrong = 0
    for relative, size in expected.items():
        try:
            actual = (root / relative).stat().st_size
        except FileNotFoundError:
            missing += 1
            continue
        wrong += actual != size
    extra = 0
    if count_extra:
        directories = {str(Path(r).parent) for r in expected}
        for directory in directories:
            if (root / directory).is_dir():
                for entry in os.scandir(root / directory):
                    if entry.is_file() and f"{directory}/{entry.name}" not in expected:
                        extra += 1
    return TreeCheck(missing, wrong, extra)


def fresh(path: Path) -> Path:
    """An empty directory at ``path`` (what was there is deleted)."""
    remove(path)
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    """Delete what a run wrote and flush, so the next run starts from a quiet disk."""
    if path.exists():
        shutil.rmtree(path)
    os.sync()
