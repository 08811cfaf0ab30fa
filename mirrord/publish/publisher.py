"""The published tree: hard-link packages in first, swap the index in last.

Blocking methods; the coordinator runs them in a worker thread. Every write
uses a ``.mirrord-tmp-`` name in the same directory and an atomic rename, so
nginx, rsync and the CDN only ever see complete files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import StoreError
from mirrord.core.model import ArchKey, PublishedFile
from mirrord.storage.durable import (
    TEMP_MARK,
    fsync_dir,
    link_atomic,
    unlink_if_exists,
    write_atomic,
)
from mirrord.storage.store import ContentStore

INDEX_NAME = "APKINDEX.tar.gz"


class Publisher:
    def __init__(self, root: Path, store: ContentStore, crash: CrashPoints | None = None) -> None:
        self.root = root
        self.store = store
        self._crash = crash or CrashPoints()

    def arch_dir(self, key: ArchKey) -> Path:
        return self.root.joinpath(*key.parts)

    def ensure_dir(self, directory: Path) -> None:
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            fsync_dir(path.parent)

    def link(self, source: str | Path, target: str | Path) -> None:
        try:
            os.link(source, target)
            return
        except FileExistsError:
            if os.path.samefile(source, target):
                return
        target = Path(target)
        temp = target.with_name(f"{TEMP_MARK}{target.name}")
        unlink_if_exists(temp)
        os.link(source, temp)
        os.replace(temp, target)

    def stage(self, key: ArchKey, link: Sequence[PublishedFile]) -> None:
        """Link the files in, durably; nothing any index lists changes (fleet mode waits here)."""
        directory = self.arch_dir(key)
        self.ensure_dir(directory)
        prefix = f"{directory}/"
        object_file = self.store.object_file
        for published in link:
            self.link(object_file(published.sha256), prefix + published.filename)
        self._crash.reach("publish.after_links")
        fsync_dir(directory)  # the links are durable before the index that lists them

    def go_live(self, key: ArchKey, index_sha256: str, mtime: float | None) -> None:
        """Replace the index by rename: the staged files become listed.

        The stored index is linked in, as the packages are: no copy to write and
        flush, so the time to go live does not grow with the index (a 5 MB one
        took ~15 ms more than a small one). Its inode takes the origin's mtime,
        so one that is live elsewhere too (another arch served the same bytes)
        is copied instead.
        """
        source = self.store.object_file(index_sha256)
        target = self.arch_dir(key) / INDEX_NAME

        def before_rename() -> None:
            self._crash.reach("publish.before_index_rename")

        if os.stat(source).st_nlink == 1:
            link_atomic(source, target, mtime=mtime, before_rename=before_rename)
        else:
            index = self.store.read_bytes(index_sha256)
            write_atomic(target, index, mtime=mtime, before_rename=before_rename)
        self._crash.reach("publish.after_index_rename")

    def delete(self, key: ArchKey, filenames: Iterable[str]) -> list[str]:
        directory = self.arch_dir(key)
        deleted = [name for name in filenames if unlink_if_exists(directory / name)]
        if deleted:
            fsync_dir(directory)
        return deleted

    def sweep(self, key: ArchKey) -> int:
        """Remove temporary names left by a crash; returns how many."""
        directory = self.arch_dir(key)
        if not directory.is_dir():
            return 0
        swept = 0
        for entry in os.scandir(directory):
            if entry.name.startswith(TEMP_MARK):
                unlink_if_exists(Path(entry.path))
                swept += 1
        return swept

    def index_bytes(self, key: ArchKey) -> bytes | None:
        try:
            return (self.arch_dir(key) / INDEX_NAME).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:  # EIO, a directory in its place: not an index we can serve
            raise StoreError(
                str(self.arch_dir(key) / INDEX_NAME), f"cannot read: {error.strerror}"
            ) from None

    def index_digest(self, key: ArchKey) -> str | None:
        data = self.index_bytes(key)
        return None if data is None else hashlib.sha256(data).hexdigest()

    def index_is(self, key: ArchKey, digest: str) -> bool:
        """Is the published index the bytes of this digest?

        A stat when it is the stored object itself (a publish links it in; damage
        written through that link is the scrub's to find, as for packages), else
        a hash of the file.
        """
        try:
            published = os.stat(self.arch_dir(key) / INDEX_NAME)
            stored = os.stat(self.store.object_file(digest))
        except FileNotFoundError:
            return self.index_digest(key) == digest
        if (published.st_dev, published.st_ino) == (stored.st_dev, stored.st_ino):
            return True
        return self.index_digest(key) == digest

    def package_files(self, key: ArchKey) -> set[str]:
        directory = self.arch_dir(key)
        if not directory.is_dir():
            return set()
        return {
            entry.name
            for entry in os.scandir(directory)
            if entry.name.endswith(".apk") and not entry.name.startswith(".")
        }
