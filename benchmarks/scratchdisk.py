"""Where runs write: an ext4 filesystem with a journal, as on a storage server.

This machine's root filesystem is ext4 *without* a journal. There, ext4 will not
reuse an inode freed in the last minute (five while its inode table block is
dirty): each new inode skips every recently freed one in its group, one buffer
lookup each (``find_inode_bit`` -> ``recently_deleted``, a check ext4 makes only
without a journal). Every run deletes the previous run's tree, tens of thousands
of files, seconds before the next tool creates as many, so creating the same
20,000 files cost 0.27 to 1.44 CPU-s depending on what had just been deleted
near them: system CPU that belonged to the harness, charged to whichever tool ran
next. With a journal the same creates cost 0.25-0.27 CPU-s whatever came before.

So when it can (root, ``losetup`` and ``mkfs.ext4``), the harness keeps its data
and runs in an ext4 image with a journal: a sparse file, loop-mounted with
direct I/O (no second page cache) and ``discard`` (deleted files give their
blocks back to the image's filesystem). The image stays between runs with the
cached data sets in it; a run killed before it unmounted is unmounted at the next
start. Otherwise the work directory is used as it is, and the report says why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_BYTES = 96 << 30  # sparse: only what is written takes space
MOUNT_OPTIONS = "discard,noatime"


@dataclass(frozen=True)
class ScratchDisk:
    path: Path
    description: str


@contextlib.contextmanager
def scratch_disk(
    work: Path, progress: Callable[[str], None], *, journaled: bool = True
) -> Iterator[ScratchDisk]:
    """A directory for data and runs; on a journaled ext4 image when possible."""
    work.mkdir(parents=True, exist_ok=True)
    if not journaled:
        yield ScratchDisk(work, f"{work} as it is ({_filesystem(work)}; --disk work)")
        return
    mountpoint = work / "disk"
    try:
        _mount(work / "disk.img", mountpoint)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        reason = _reason(error)
        progress(f"no journaled scratch disk ({reason}): runs write to {work}")
        yield ScratchDisk(work, f"{work} as it is ({_filesystem(work)}; no image: {reason})")
        return
    try:
        yield ScratchDisk(
            mountpoint,
            f"ext4 with a journal, {MOUNT_OPTIONS}: a loop device with direct I/O "
            f"on {work / 'disk.img'} (see benchmarks/scratchdisk.py)",
        )
    finally:
        with contextlib.suppress(OSError):
            if Path.cwd().is_relative_to(mountpoint):
                os.chdir(work)
        unmount(mountpoint)


def _mount(image: Path, mountpoint: Path) -> None:
    if os.geteuid() != 0:
        raise PermissionError("not root")
    mountpoint.mkdir(exist_ok=True)
    if os.path.ismount(mountpoint):  # a run killed before it unmounted
        unmount(mountpoint)
    if not image.exists():
        _make_image(image)
    device = _run("losetup", "--find", "--show", "--direct-io=on", "--sector-size=4096", image)
    try:
        _run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, device, mountpoint)
    finally:
        # Detaching a mounted loop device marks it to go with the last unmount,
        # so a harness killed with the disk mounted leaves no device behind.
        _run("losetup", "--detach", device)
    if not _has_journal(mountpoint):
        unmount(mountpoint)
        raise OSError(f"{image} mounted without a journal")


def _make_image(image: Path) -> None:
    partial = image.with_name(image.name + ".new")
    with open(partial, "wb") as handle:
        handle.truncate(IMAGE_BYTES)
    _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", partial)
    partial.rename(image)


def unmount(mountpoint: Path) -> None:
    """Unmount, lazily if something still has a file open there."""
    try:
        _run("umount", mountpoint)
    except subprocess.CalledProcessError:
        _run("umount", "--lazy", mountpoint)


def _has_journal(mountpoint: Path) -> bool:
    return _filesystem(mountpoint) == "ext4 with a journal"


def _mount_of(path: Path) -> tuple[str, str, str] | None:
    """(source, target, type) of the mount ``path`` is on: the longest target holding it,
    the last one listed when several are mounted on the same path (the one in effect)."""
    found: tuple[str, str, str] | None = None
    resolved = str(path.resolve())
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            source, target, kind = line.split()[:3]
            inside = resolved == target or resolved.startswith(target.rstrip("/") + "/")
            if inside and (found is None or len(target) >= len(found[1])):
                found = (source, target, kind)
    return found


def _mount_source(mountpoint: Path) -> str | None:
    """The device mounted on ``mountpoint`` itself (None: nothing is)."""
    found = _mount_of(mountpoint)
    return found[0] if found is not None and found[1] == str(mountpoint.resolve()) else None


def _filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on, and whether an ext4 one has a journal."""
    source, _target, kind = _mount_of(path) or ("", "", "")
    if kind != "ext4":
        return kind or "unknown filesystem"
    task = Path("/sys/fs/ext4") / Path(source).name / "journal_task"
    try:
        journal = task.read_text().strip() not in ("", "<none>")
    except OSError:
        return "ext4"
    return "ext4 with a journal" if journal else "ext4 without a journal"


def _run(*argv: str | Path) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout.strip()


def _reason(error: BaseException) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        said = (error.stderr or "").strip().splitlines()
        return f"{error.cmd[0]} failed: {said[-1] if said else f'exit {error.returncode}'}"
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.filename} not found"
    return str(error)
