"""Pure decisions: what a publish must link, fetch and delete, and what is due.

No I/O here: callers pass in what they know and carry out what comes back.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mirrord.alpine.apkindex import IndexEntry
from mirrord.core.errors import MassDeletionError
from mirrord.core.model import ArchKey, PackageRef, PublishedFile
from mirrord.publish.filetable import FileTable, Selection
from mirrord.publish.waiting import Waiting

PENDING = ""  # the digest of a file whose package is still being fetched


@dataclass
class PublishPlan:
    """What publishing a new index takes, decided before its downloads finish.

    Files whose package is still being fetched carry the PENDING digest;
    ``fill`` completes them afterwards, touching only those entries, so the
    work left when the last download lands does not grow with the arch.
    """

    files: FileTable  # the new snapshot, in index order
    # indexes into files: names that are new or change content (4 bytes each, not an int
    # object and a pointer: a fresh arch links every file)
    link: array[int]
    replaced: tuple[str, ...]  # names whose published bytes change
    unlisted: tuple[str, ...]  # names the previous snapshot listed and this one does not
    dropped_packages: tuple[str, ...]  # package names that disappear entirely
    # identity -> position of the file waiting for it (a list when several names share it)
    waiting: Waiting = field(default_factory=Waiting)

    def missing(self) -> list[PackageRef]:
        """What to fetch: one package per identity still waiting, in index order."""
        return [self.ref(identity) for identity in self.waiting]

    def ref(self, identity: tuple[str, int]) -> PackageRef:
        """The package to fetch for an identity still waiting (named by its first file).

        Built when needed: a list of refs for a whole arch costs ~70 bytes a package
        on top of what the plan holds, for as long as its downloads last.
        """
        positions = self.waiting[identity]
        first = positions[0] if isinstance(positions, list) else positions
        return PackageRef(self.files.filename(first), *identity)

    def fill_one(self, identity: tuple[str, int], sha256: str) -> None:
        """A package has been stored: give its files their digest."""
        positions = self.waiting.take(identity)
        for position in positions if isinstance(positions, list) else (positions,):
            self.files.set_digest(position, sha256)

    def fill(self, digests: Mapping[tuple[str, int], str]) -> None:
        for identity, sha256 in digests.items():
            if identity in self.waiting:
                self.fill_one(identity, sha256)

    @property
    def complete(self) -> bool:
        return not self.waiting

    @property
    def to_link(self) -> Selection:
        return Selection(self.files, self.link)

    @property
    def bytes(self) -> int:
        return self.files.bytes


def plan_publish(
    key: ArchKey,
    entries: Sequence[IndexEntry],
    known: Mapping[tuple[str, int], str],
    previous: Sequence[PublishedFile] | None,
    *,
    max_delete_fraction: float,
    force: bool,
    relink_all: bool = False,
) -> PublishPlan:
    """Plan publishing ``entries``; raise MassDeletionError when too many package names vanish.

    ``known`` maps index identities (C:, S:) to stored objects; any other entry
    is being fetched. ``relink_all`` is for a tree that may have been damaged
    behind our back: every file is linked again (a no-op for intact ones).
    """
    files = FileTable()
    waiting = Waiting()
    for position, entry in enumerate(entries):
        identity = (entry.checksum, entry.size)
        sha256 = known.get(identity, PENDING)
        if sha256 == PENDING:
            waiting.add(identity, position)
        files.append(entry.filename, sha256, entry.size, entry.name)
    plan = _plan(key, files, previous, max_delete_fraction, force, relink_all)
    plan.waiting = waiting
    return plan


def plan_rollback(
    key: ArchKey, files: Sequence[PublishedFile], previous: Sequence[PublishedFile] | None
) -> PublishPlan:
    """Plan publishing a remembered snapshot again (an operator's decision: no guard)."""
    return _plan(key, FileTable(files), previous, 1.0, True, False)


def _plan(
    key: ArchKey,
    files: FileTable,
    previous: Sequence[PublishedFile] | None,
    max_delete_fraction: float,
    force: bool,
    relink_all: bool,
) -> PublishPlan:
    before = {f.filename: f for f in previous or ()}
    link = array("I")
    replaced: list[str] = []
    now_listed: set[str] = set()
    now_packages: set[str] = set()
    for position in range(len(files)):
        filename = files.filename(position)
        if before:  # a first publish compares nothing (and a fresh arch has 25,000 names)
            now_listed.add(filename)
            now_packages.add(files.package(position, filename))
        old = before.get(filename)
        if old is None or relink_all or not old.sha256:
            # New, or a tree to repair, or adopted without knowing its bytes.
            link.append(position)
        elif (sha256 := files.digest(position)) == PENDING or old.sha256 != sha256:
            # Same name, other bytes (a pending package has bytes we do not store yet).
            link.append(position)
            replaced.append(filename)
    unlisted = tuple(name for name in before if name not in now_listed)
    previous_names = {f.package for f in previous or ()}
    dropped = sorted(previous_names - now_packages)
    if previous_names and not force and len(dropped) / len(previous_names) > max_delete_fraction:
        raise MassDeletionError(
            str(key), len(dropped), len(previous_names), max_delete_fraction, tuple(dropped[:5])
        )
    return PublishPlan(files, link, tuple(replaced), unlisted, tuple(dropped))


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
