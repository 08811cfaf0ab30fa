"""Seeding the store from files the published tree already serves.

A mirror migrated from rsync, or a server whose storage was lost, has the
right bytes on disk already. Every candidate (same name and size as the index
says) is verified like a download, then hard-linked into the store instead of
being fetched again.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from mirrord.alpine.apkpackage import PackageDigester, check_package
from mirrord.core.aio import first_of_group
from mirrord.core.errors import MirrordError
from mirrord.core.model import PackageRef
from mirrord.storage.committer import Committer
from mirrord.storage.durable import hash_file
from mirrord.storage.store import ContentStore, StoredObject


def _present(directory: Path, missing: Sequence[PackageRef]) -> list[PackageRef]:
    """The missing packages the tree has a regular file for, of the listed size.

    Stats only the names asked about: an incremental pass misses a few files
    of an arch that may list tens of thousands.
    """
    if not directory.is_dir():
        return []
    found: list[PackageRef] = []
    for ref in missing:
        try:
            info = os.stat(directory / ref.filename, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_size == ref.size:
            found.append(ref)
    return found


def _verified_link(source: Path, temp: Path, ref: PackageRef) -> str | None:
    """Link ``source`` to ``temp`` if it is exactly what ``ref`` promises; its store key."""
    try:
        os.link(source, temp)
        os.chmod(temp, 0o444)  # an adopted tree may have writable files; objects are not
    except OSError:
        temp.unlink(missing_ok=True)
        return None
    digester = PackageDigester(ref.filename)
    try:
        hash_file(temp, digester.feed)
        digest = digester.finish()
        check_package(ref, digest)
    except (OSError, MirrordError):
        temp.unlink(missing_ok=True)
        return None
    return digest.key


def _verify_and_place(
    directory: Path, candidates: Sequence[PackageRef], store: ContentStore
) -> list[tuple[PackageRef, str]]:
    placed: list[tuple[PackageRef, str]] = []
    for ref in candidates:
        temp = store.temp_path()
        key = _verified_link(directory / ref.filename, temp, ref)
        if key is not None:
            store.place_file(temp, key)
            placed.append((ref, key))
    return placed


async def seed_from_tree(
    directory: Path, missing: Sequence[PackageRef], store: ContentStore, committer: Committer
) -> dict[tuple[str, int], str]:
    """Identity -> store key of every missing package found intact in ``directory``."""
    if not missing:
        return {}
    candidates = await asyncio.to_thread(_present, directory, missing)
    if not candidates:
        return {}
    placed = await asyncio.to_thread(_verify_and_place, directory, candidates, store)
    with first_of_group(MirrordError):  # e.g. ShuttingDownError: the committer has stopped
        async with asyncio.TaskGroup() as group:
            commits = [
                group.create_task(committer.commit(StoredObject(key, ref.size), ref.checksum))
                for ref, key in placed
            ]
    return {ref.identity: task.result() for (ref, _), task in zip(placed, commits, strict=True)}
