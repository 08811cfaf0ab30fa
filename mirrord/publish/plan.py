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
from mirrord.publish.waiting import Positions, Waiting, checksum_digest, each
from mirrord.storage.filetable import FileTable, Selection

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
        return [self.ref_entry(entry) for entry in self.waiting.snapshot()]

    def ref(self, identity: tuple[str, int]) -> PackageRef:
        """The package to fetch for an identity still waiting (named by its first file).

        Built when needed: a list of refs for a whole arch costs ~70 bytes a package
        on top of what the plan holds, for as long as its downloads last.
        """
        first = each(self.waiting[identity])[0]
        return PackageRef(self.files.filename(first), *identity)

    def ref_entry(self, entry: int) -> PackageRef:
        """``ref`` of a waiting entry, by its number (``Waiting.snapshot``)."""
        filename = self.files.filename(self.waiting.first(entry))
        return PackageRef(filename, *self.waiting.identity(entry))

    def fill_one(self, identity: tuple[str, int], sha256: str) -> None:
        """A package has been stored: give its files their digest."""
        if not _fill(self.files, self.waiting.take(identity), sha256):
            raise KeyError(identity)

    def fill_entry(self, entry: int, sha256: str) -> None:
        """``fill_one`` of a waiting entry, by its number."""
        if not _fill(self.files, self.waiting.take_entry(entry), sha256):
            raise KeyError(entry)

    def fill(self, digests: Mapping[tuple[str, int], str]) -> None:
        _fill_all(self.files, self.waiting, digests)

    @property
    def complete(self) -> bool:
        return not self.waiting

    @property
    def to_link(self) -> Selection:
        return Selection(self.files, self.link)

    @property
    def bytes(self) -> int:
        return self.files.bytes


@dataclass
class Listing:
    """What an index lists, packed as it is read: every file pending, every identity waiting."""

    files: FileTable = field(default_factory=FileTable)
    waiting: Waiting = field(default_factory=Waiting)
    unchanged: int = 0  # files whose digest came from the published snapshot

    def fill(self, known: Mapping[tuple[str, int], str]) -> None:
        """Give the files of stored identities their digests (they wait no more)."""
        _fill_all(self.files, self.waiting, known)


def list_files(entries: Iterable[IndexEntry], previous: FileTable | None = None) -> Listing:
    """Pack entries one at a time: an arch's index never exists as 25,000 objects at once.

    ``previous``: the published snapshot, when its files are all in the store
    (GC keeps what a remembered snapshot lists). A file it lists under the same
    name, C: and size is that package: it takes the digest from there, and
    only what changed waits for the store's lookup.
    """
    listing = Listing()
    files, waiting = listing.files, listing.waiting
    before = previous.name_positions() if previous is not None else {}
    for position, entry in enumerate(entries):
        checksum = checksum_digest(entry.checksum)
        files.append(entry.filename, PENDING, entry.size, entry.name, checksum)
        old = before.get(entry.filename)
        if (
            previous is not None
            and old is not None
            and previous.same_package(old, checksum, entry.size)
        ):
            files.copy_digest(position, previous, old)
            listing.unchanged += 1
        else:
            waiting.add((entry.checksum, entry.size), position)
    return listing


def plan_publish(
    key: ArchKey,
    entries: Iterable[IndexEntry],
    known: Mapping[tuple[str, int], str],
    previous: Sequence[PublishedFile] | None,
    *,
    max_delete_fraction: float,
    force: bool,
    relink_all: bool = False,
) -> PublishPlan:
    """``plan_listing`` of these entries, ``known`` filled in."""
    listing = list_files(entries)
    listing.fill(known)
    return plan_listing(
        key,
        listing,
        previous,
        max_delete_fraction=max_delete_fraction,
        force=force,
        relink_all=relink_all,
    )


def plan_listing(
    key: ArchKey,
    listing: Listing,
    previous: Sequence[PublishedFile] | None,
    *,
    max_delete_fraction: float,
    force: bool,
    relink_all: bool = False,
) -> PublishPlan:
    """Plan publishing a listing; raise MassDeletionError when too many package names vanish.

    The listing's files still waiting are being fetched (``Listing.fill`` gave
    the stored ones their digests). ``relink_all`` is for a tree that may have been damaged
    behind our back: every file is linked again (a no-op for intact ones).
    The listing is the plan's from here on (its files get their digests).
    """
    plan = _plan(key, listing.files, previous, max_delete_fraction, force, relink_all)
    plan.waiting = listing.waiting
    return plan


def plan_rollback(
    key: ArchKey, files: Sequence[PublishedFile], previous: Sequence[PublishedFile] | None
) -> PublishPlan:
    """Plan publishing a remembered snapshot again (an operator's decision: no guard)."""
    return _plan(key, FileTable(files), previous, 1.0, True, False)


def _fill(files: FileTable, positions: Positions | None, sha256: str) -> bool:
    """Give the files that waited at ``positions`` their digest; False when none did."""
    if positions is None:
        return False
    for position in each(positions):
        files.set_digest(position, sha256)
    return True


def _fill_all(files: FileTable, waiting: Waiting, known: Mapping[tuple[str, int], str]) -> None:
    for identity, sha256 in known.items():
        _fill(files, waiting.take(identity), sha256)


def _plan(
    key: ArchKey,
    files: FileTable,
    previous: Sequence[PublishedFile] | None,
    max_delete_fraction: float,
    force: bool,
    relink_all: bool,
) -> PublishPlan:
    old_files = previous if isinstance(previous, FileTable) else FileTable(previous or ())
    if not old_files:  # a first publish compares nothing (and a fresh arch has 25,000 names)
        return PublishPlan(files, array("I", range(len(files))), (), (), ())
    old_names = old_files.names()
    before = old_files.name_positions(old_names)
    link = array("I")
    replaced: list[str] = []
    now_listed: set[str] = set()
    now_packages: set[str] = set()
    for position, filename in enumerate(files.names()):
        now_listed.add(filename)
        now_packages.add(files.package(position, filename))
        old = before.get(filename)
        if old is None or relink_all or old_files.pending(old):
            # New, or a tree to repair, or adopted without knowing its bytes.
            link.append(position)
        elif files.pending(position) or not files.same_digest(position, old_files, old):
            # Same name, other bytes (a pending package has bytes we do not store yet).
            link.append(position)
            replaced.append(filename)
    unlisted = tuple(name for name in before if name not in now_listed)
    previous_names = old_files.package_names(old_names)
    dropped = sorted(previous_names - now_packages)
    if not force and len(dropped) / len(previous_names) > max_delete_fraction:
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
