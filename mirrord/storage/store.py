"""The content-addressed object store: ``objects/<kind>/<ab>/<hex>``.

An object's key (``mirrord.core.objectkey``) names its kind and file: plain
SHA-256 keys live in ``objects/sha256/``, package keys in ``objects/apk/``.
Everything that re-reads an object to check it (recovery, scrub) recomputes
the key of the object's own kind.

Objects are written read-only as unnamed ``O_TMPFILE`` files in ``objects/``
(or, where the kernel lacks it, named temp files in ``tmp/`` on the same
filesystem), get their name only once verified, and become durable in
batches with one ``syncfs``. Blocking methods: call them from a worker thread
(or inline for small objects).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mirrord.alpine.apkpackage import PackageDigester
from mirrord.core.errors import PackageFormatError, StoreError
from mirrord.core.objectkey import FAN_OUT, KIND_DIRECTORIES, is_key, is_package_key, split_key
from mirrord.storage.durable import Syncer, hash_file, unlink_if_exists


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object named under ``objects/`` (durable once the committer says so)."""

    sha256: str  # its key: a plain SHA-256 or a package key (mirrord.core.objectkey)
    size: int


def write_readonly(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0444 (the fd stays writable) and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        view = memoryview(data)
        while view.nbytes:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class TempObject:
    fd: int
    path: Path | None  # None: an unnamed O_TMPFILE file


class ContentStore:
    def __init__(self, root: Path, syncer: Syncer | None = None) -> None:
        self.root = root
        self.objects = root / "objects" / "sha256"  # also where unnamed temp files are made
        self._objects_root = str(root / "objects")
        self.tmp = root / "tmp"
        self._syncer = syncer or Syncer()
        self._temp_prefix = f"{os.getpid()}-{os.urandom(4).hex()}-"
        self._temps = 0
        self._tmpfile_ok = hasattr(os, "O_TMPFILE") and Path("/proc/self/fd").is_dir()
        self._proc = -1

    def prepare(self) -> int:
        """Create the layout and sweep temporary leftovers; returns how many were swept."""
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(str(self.root), f"cannot create the store: {error.strerror}") from None
        for kind in KIND_DIRECTORIES.values():  # every fan-out directory up front
            (self.root / "objects" / kind).mkdir(exist_ok=True)
            for prefix in FAN_OUT:
                (self.root / "objects" / kind / prefix).mkdir(exist_ok=True)
        swept = 0
        for entry in os.scandir(self.tmp):
            if entry.is_file(follow_symlinks=False):
                unlink_if_exists(Path(entry.path))
                swept += 1
        return swept

    def object_path(self, key: str) -> Path:
        return Path(self.object_file(key))

    def object_file(self, key: str) -> str:
        """``object_path`` as a string, built without pathlib's joins (once per file)."""
        kind, name = split_key(key)
        return f"{self._objects_root}/{kind}/{name[:2]}/{name}"

    def has(self, key: str) -> bool:
        return self.object_path(key).is_file()

    def temp_path(self) -> Path:
        """A fresh name in ``tmp/``: unique within this process and across restarts."""
        self._temps += 1
        return self.tmp / f"{self._temp_prefix}{self._temps}"

    def create_temp(self) -> TempObject:
        """An object under construction: an unnamed file when the kernel allows it.

        ``O_TMPFILE`` in ``objects/`` costs a quarter of a named temp file plus
        rename (no directory entries to create and remove), and a crash leaves
        nothing behind to sweep. Read-only from birth; the fd stays writable.
        """
        if self._tmpfile_ok:
            try:
                fd = os.open(self.objects, os.O_WRONLY | os.O_TMPFILE, 0o444)
            except OSError as error:
                if error.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._tmpfile_ok = False
            else:
                return TempObject(fd, None)
        path = self.temp_path()
        return TempObject(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), path)

    def place_temp(self, temp: TempObject, key: str) -> None:
        """Give a verified temp object its name under ``objects/``. Not yet durable.

        If the object exists already (same digest, same bytes), the existing
        inode stays: it may be hard-linked into the published tree.
        """
        target = self.object_file(key)
        if temp.path is not None:
            self.place_file(temp.path, key)
            return
        with contextlib.suppress(FileExistsError):
            os.link(f"self/fd/{temp.fd}", target, src_dir_fd=self._proc_fd(), follow_symlinks=True)

    def discard_temp(self, temp: TempObject) -> None:
        if temp.path is not None:
            unlink_if_exists(temp.path)

    def _proc_fd(self) -> int:
        if self._proc < 0:
            self._proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        return self._proc

    def place_file(self, temp: Path, key: str) -> None:
        """Rename a verified named temp file into place under ``objects/``. Not yet durable.

        Temp files are created read-only (mode 0444), so this is a rename.
        """
        target = self.object_file(key)
        if os.path.exists(target):
            # Same digest, same bytes: keep the existing inode, which may be
            # hard-linked into the published tree already.
            unlink_if_exists(temp)
            return
        os.rename(temp, target)

    def put_bytes(self, data: bytes) -> str:
        """Store small in-memory content (an index); returns its digest. Not yet durable."""
        key = hashlib.sha256(data).hexdigest()
        if self.has(key):
            return key
        temp = self.temp_path()
        try:
            write_readonly(temp, data)
            self.place_file(temp, key)
        except OSError as error:  # ENOSPC: no partial object stays behind
            unlink_if_exists(temp)
            raise StoreError(str(temp), f"cannot store: {error.strerror}") from None
        return key

    def read_bytes(self, key: str) -> bytes:
        path = self.object_path(key)
        try:
            return path.read_bytes()
        except OSError as error:
            raise StoreError(str(path), f"cannot read a stored object: {error.strerror}") from None

    def sync(self) -> None:
        """Make every placed object durable (one syncfs for the whole batch)."""
        self._syncer.sync_filesystem(self.root)

    def object_names(self, shard: str) -> set[str]:
        """The objects of one fan-out directory (``shard``: "ab" or "apk:ab"), by key.

        A listing, no reads.
        """
        kind_prefix, fan = shard[:-2], shard[-2:]
        directory = self.root / "objects" / KIND_DIRECTORIES[kind_prefix] / fan
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return set()
        keys = {kind_prefix + name for name in entries}
        return {key for key in keys if is_key(key) and key.startswith(shard)}

    def describe_object(self, key: str) -> tuple[str, int, str | None] | None:
        """Re-read an object: (the key of its actual bytes, size, its C: if a package).

        The key is computed the way objects of ``key``'s kind are named. None
        when it is missing or unreadable. Used by recovery for objects that
        reached ``objects/`` but not the database, and by scrub.
        """
        digester = PackageDigester(key)
        plain = hashlib.sha256()
        is_package = True
        package_kind = is_package_key(key)

        def feed_package(block: bytes) -> None:
            nonlocal is_package
            if is_package:
                try:
                    digester.feed(block)
                except PackageFormatError:
                    is_package = False

        # A package key needs no whole-file hash; a plain key needs no parse but
        # recovery records a package's C: so lookups by identity find it.
        feeds = (feed_package,) if package_kind else (plain.update, feed_package)
        try:
            size = hash_file(self.object_path(key), *feeds)
        except OSError:  # gone, or unreadable (EIO, a directory in its place): not kept
            return None
        checksum: str | None = None
        actual: str | None = None if package_kind else plain.hexdigest()
        if is_package:
            try:
                digest = digester.finish()
            except PackageFormatError:
                pass
            else:
                checksum = digest.checksum
                actual = digest.key if package_kind else actual
        if actual is None:  # not a package where only packages may be
            actual = "not a package"
        return actual, size, checksum

    def remove(self, key: str) -> bool:
        """Delete an object (whatever is in its place, even a directory)."""
        path = self.object_path(key)
        try:
            return unlink_if_exists(path)
        except IsADirectoryError:
            import shutil  # here: it imports bz2 and lzma, ~0.6 MiB of every fetch worker

            shutil.rmtree(path, ignore_errors=True)
            return True
        except OSError as error:
            raise StoreError(
                str(path), f"cannot remove a stored object: {error.strerror}"
            ) from None
