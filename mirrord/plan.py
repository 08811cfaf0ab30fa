"""Pure decisions: what to fetch, what a publish must link and delete, what is due.

No I/O here: callers pass in what they know and carry out what comes back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mirrord.apkindex import IndexEntry
from mirrord.errors import MassDeletionError
from mirrord.model import ArchKey, PackageRef, PublishedFile


@dataclass(frozen=True)
class FetchPlan:
    stored: dict[str, str]  # filename -> sha256 of entries already in the store
    missing: tuple[PackageRef, ...]  # one per identity, in index order


def plan_fetch(entries: Sequence[IndexEntry], known: Mapping[tuple[str, int], str]) -> FetchPlan:
    stored: dict[str, str] = {}
    missing: list[PackageRef] = []
    queued: set[tuple[str, int]] = set()
    for entry in entries:
        identity = (entry.checksum, entry.size)
        sha256 = known.get(identity)
        if sha256 is not None:
            stored[entry.filename] = sha256
        elif identity not in queued:
            queued.add(identity)
            missing.append(entry.ref())
    return FetchPlan(stored, tuple(missing))


@dataclass(frozen=True)
class PublishPlan:
    files: tuple[PublishedFile, ...]  # the new snapshot, in index order
    link: tuple[PublishedFile, ...]  # names that are new or change content
    replaced: tuple[str, ...]  # subset of link: names whose published bytes change
    unlisted: tuple[str, ...]  # names the previous snapshot listed and this one does not
    dropped_packages: tuple[str, ...]  # package names that disappear entirely

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def snapshot_files(
    entries: Sequence[IndexEntry], digests: Mapping[tuple[str, int], str]
) -> tuple[PublishedFile, ...]:
    """Every index entry with the stored object that holds its bytes (KeyError if missing)."""
    return tuple(
        PublishedFile(e.filename, digests[(e.checksum, e.size)], e.size, e.name) for e in entries
    )


def plan_publish(
    key: ArchKey,
    files: Sequence[PublishedFile],
    previous: Sequence[PublishedFile] | None,
    *,
    max_delete_fraction: float,
    force: bool,
    relink_all: bool = False,
) -> PublishPlan:
    """Decide a publish; raise MassDeletionError when too many package names vanish.

    ``relink_all`` is for a tree that may have been damaged behind our back:
    every file is linked again (a no-op for the ones that are intact).
    A previous file with an empty digest is one adopted without knowing its bytes.
    """
    before = {f.filename: f for f in previous or ()}
    now_listed = {f.filename for f in files}
    link: list[PublishedFile] = []
    replaced: list[str] = []
    for f in files:
        old = before.get(f.filename)
        if old is None or relink_all or not old.sha256:
            link.append(f)
        elif old.sha256 != f.sha256:
            link.append(f)
            replaced.append(f.filename)
    unlisted = tuple(name for name in before if name not in now_listed)
    previous_names = {f.package for f in previous or ()}
    dropped = sorted(previous_names - {f.package for f in files})
    if previous_names and not force and len(dropped) / len(previous_names) > max_delete_fraction:
        raise MassDeletionError(str(key), len(dropped), len(previous_names), max_delete_fraction)
    return PublishPlan(tuple(files), tuple(link), tuple(replaced), unlisted, tuple(dropped))


def due_deletions(
    pending: Mapping[str, float], listed: Iterable[str], *, now: float, grace: float
) -> tuple[list[str], list[str]]:
    """Split pending deletions into (delete now, no longer pending because listed again)."""
    listed_set = set(listed)
    due: list[str] = []
    relisted: list[str] = []
    for name, since in sorted(pending.items()):
        if name in listed_set:
            relisted.append(name)
        elif now - since >= grace:
            due.append(name)
    return due, relisted
