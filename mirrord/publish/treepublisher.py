"""The published releases tree: content first, sidecars and yaml last, links by rename.

Blocking methods; the coordinator runs them in a worker thread. Files are
hard links to verified, durable store objects (``Publisher.link``), so
readers see a whole file or the previous one; ``latest-stable`` is a new
symlink renamed over the old one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mirrord.core.crashpoints import CrashPoints
from mirrord.publish.publisher import Publisher
from mirrord.storage.durable import TEMP_MARK, fsync_dir, unlink_if_exists, write_atomic


class TreePublisher:
    def __init__(self, publisher: Publisher, crash: CrashPoints | None = None) -> None:
        self._publisher = publisher
        self._crash = crash or CrashPoints()
        self.root = publisher.root

    def _link_all(self, base: Path, files: Sequence[tuple[str, str]]) -> None:
        touched: set[Path] = set()
        for relpath, sha256 in files:
            target = base / relpath
            self._publisher.ensure_dir(target.parent)
            self._publisher.link(self._publisher.store.object_path(sha256), target)
            touched.add(target.parent)
        for directory in sorted(touched):
            fsync_dir(directory)

    def publish(
        self,
        directory: str,
        content: Sequence[tuple[str, str]],
        indexes: Sequence[tuple[str, str]],
    ) -> None:
        """Link every (relpath, sha256) of ``content``, make it durable, then the indexes."""
        base = self.root / directory
        self._publisher.ensure_dir(base)
        self._link_all(base, content)
        self._crash.reach("releases.after_content")
        self._link_all(base, indexes)

    def missing(self, digests: Iterable[str]) -> set[str]:
        """The digests whose objects are not (any more) in the store."""
        return {d for d in digests if not self._publisher.store.has(d)}

    def stored_size(self, sha256: str) -> int | None:
        try:
            return self._publisher.store.object_path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def releases_directories(self) -> list[str]:
        """Every published ``<branch>/releases/<arch>`` (for the sweep at start-up)."""
        if not self.root.is_dir():
            return []
        found = self.root.glob("*/releases/*/")
        return sorted(str(p.relative_to(self.root)) for p in found if p.is_dir())

    def sweep(self, directory: str) -> int:
        """Remove temporary names a crash left in ``directory`` (and its subdirectories)."""
        swept = 0
        for parent, _dirs, names in os.walk(self.root / directory):
            for name in names:
                if name.startswith(TEMP_MARK):
                    swept += unlink_if_exists(Path(parent, name))
        return swept

    def sweep_top(self) -> int:
        """Temporary names at the top level (``MIRRORS.txt``, ``latest-stable``)."""
        if not self.root.is_dir():
            return 0
        found = [e.path for e in os.scandir(self.root) if e.name.startswith(TEMP_MARK)]
        return sum(unlink_if_exists(Path(path)) for path in found)

    def delete(self, directory: str, relpaths: Iterable[str]) -> list[str]:
        base = self.root / directory
        deleted = [p for p in relpaths if unlink_if_exists(base / p)]
        for parent in sorted({(base / p).parent for p in deleted}):
            fsync_dir(parent)
        return deleted

    def write_file(self, name: str, data: bytes, mtime: float | None) -> None:
        """A top-level file (``MIRRORS.txt``), replaced atomically."""
        write_atomic(self.root / name, data, mtime=mtime)

    def read_link(self, name: str) -> str | None:
        try:
            return os.readlink(self.root / name)
        except (FileNotFoundError, OSError):
            return None

    def point_link(self, name: str, target: str) -> None:
        """Make ``name`` a relative symlink to ``target``: a new link, renamed over the old."""
        temp = self.root / f"{TEMP_MARK}{name}"
        unlink_if_exists(temp)
        os.symlink(target, temp)
        os.replace(temp, self.root / name)
        fsync_dir(self.root)
