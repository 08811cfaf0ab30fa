"""Durable file primitives: fsync of files and directories, batched syncfs, atomic replace,
and reading a file back in blocks to hash it.

All blocking; callers on the event loop run them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_MARK = ".mirrord-tmp-"
READ_BLOCK = 1 << 20


def _libc() -> ctypes.CDLL | None:
    # The symbols already loaded into the process (libc among them): no
    # find_library, which runs ldconfig in a subprocess in every fetch worker.
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a file range to disk now (sync_file_range,
    SYNC_FILE_RANGE_WRITE): no waiting, no durability promise, just earlier I/O."""
    call = _sync_file_range()
    if call is not None:
        call(fd, ctypes.c_int64(offset), ctypes.c_int64(length), SYNC_FILE_RANGE_WRITE)


class Syncer:
    """Makes everything written under a directory durable.

    ``syncfs(2)`` flushes the whole filesystem in one call, which is far
    cheaper than an fsync per small file; where it is missing, fall back to
    ``sync(2)``.
    """

    def __init__(self) -> None:
        libc = _libc()
        self._syncfs = getattr(libc, "syncfs", None) if libc is not None else None

    def sync_filesystem(self, directory: Path) -> None:
        if self._syncfs is None:
            os.sync()
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(directory))
        finally:
            os.close(fd)


@functools.cache
def _sync_file_range() -> Any:
    libc = _libc()
    return getattr(libc, "sync_file_range", None) if libc is not None else None


def fsync_dir(directory: Path) -> None:
    fsync_path(directory, os.O_RDONLY | os.O_DIRECTORY)


def fsync_path(path: Path | str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mtime: float | None = None,
    mode: int = 0o644,
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    temp = path.with_name(f"{TEMP_MARK}{path.name}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(temp, (mtime, mtime))
    _rename_into_place(temp, path, before_rename)


def link_atomic(
    source: str,
    path: Path,
    *,
    mtime: float | None = None,
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Put a hard link to the durable file ``source`` at ``path`` as ``write_atomic``
    puts bytes there: readers see the old file or the new one."""
    temp = path.with_name(f"{TEMP_MARK}{path.name}")
    unlink_if_exists(temp)
    os.link(source, temp)
    if mtime is not None:
        os.utime(temp, (mtime, mtime))
        fsync_path(temp)  # the new mtime, before the name that shows it
    _rename_into_place(temp, path, before_rename)


def _rename_into_place(temp: Path, path: Path, before_rename: Callable[[], None] | None) -> None:
    if before_rename is not None:
        before_rename()
    os.replace(temp, path)
    fsync_dir(path.parent)


def unlink_if_exists(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def hash_file(path: Path, *feeds: Callable[[bytes], object]) -> int:
    """Pass the file's bytes to every ``feed`` (a hash's ``update``) in blocks; its size."""
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            for feed in feeds:
                feed(block)
            size += len(block)
    return size
