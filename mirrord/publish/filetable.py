"""A snapshot's file list held column by column: ~80 bytes a package instead of ~370.

A plan keeps its arch's file list from planning until the record is written,
through every download: at 100,000 packages one ``PublishedFile`` per package
(an object, its size as an int, its package name and its 68-character key as
strings) was the main process's largest cost. Here a file is its name's UTF-8
bytes in one buffer with its end in an ``array``, the length of its package
name as a prefix of that name, its size in 4 bytes (larger ones aside) and its
key as 32 bytes plus a kind byte.
``PublishedFile`` values are built when read, so callers see the same records.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from mirrord.core.model import PublishedFile
from mirrord.core.objectkey import PACKAGE_PREFIX, is_key

_PENDING, _PLAIN, _PACKAGE, _OTHER = 0, 1, 2, 3  # kinds of digest
_NO_PREFIX = 0xFFFF  # the package name is not a prefix of the file name: kept aside
_BIG = 0xFFFFFFFF  # a size of 4 GiB or more: kept aside
_DIGEST = 32


class FileTable(Sequence[PublishedFile]):
    """An ordered, fixed-length list of published files whose digests can be set."""

    __slots__ = (
        "_big",
        "_digests",
        "_kinds",
        "_name_ends",
        "_names",
        "_odd",
        "_package_lengths",
        "_sizes",
    )

    def __init__(self, files: Iterable[PublishedFile] = ()) -> None:
        self._names = bytearray()
        self._name_ends = array("I")  # an index's names are far from 4 GiB
        self._package_lengths = array("H")
        self._sizes = array("I")
        self._kinds = array("B")
        self._digests = bytearray()
        # Rare values that do not fit the columns: (position, "package"|"digest") -> text.
        self._odd: dict[tuple[int, str], str] = {}
        self._big: dict[int, int] = {}  # position -> a size of 4 GiB or more
        for file in files:
            self.append(file.filename, file.sha256, file.size, file.package)

    def append(self, filename: str, sha256: str, size: int, package: str) -> None:
        position = len(self._name_ends)
        self._names += filename.encode()
        self._name_ends.append(len(self._names))
        if package and filename.startswith(package) and len(package) < _NO_PREFIX:
            self._package_lengths.append(len(package))
        else:
            self._package_lengths.append(_NO_PREFIX)
            self._odd[(position, "package")] = package
        if size < _BIG:
            self._sizes.append(size)
        else:
            self._sizes.append(_BIG)
            self._big[position] = size
        self._kinds.append(_PENDING)
        self._digests.extend(bytes(_DIGEST))
        self.set_digest(position, sha256)

    def set_digest(self, position: int, sha256: str) -> None:
        self._odd.pop((position, "digest"), None)
        start = position * _DIGEST
        if not sha256:
            kind = _PENDING
        elif is_key(sha256):
            package = sha256.startswith(PACKAGE_PREFIX)
            kind = _PACKAGE if package else _PLAIN
            hex_digest = sha256[len(PACKAGE_PREFIX) :] if package else sha256
            self._digests[start : start + _DIGEST] = bytes.fromhex(hex_digest)
        else:  # not an object key (a test's stand-in): kept as it came
            kind = _OTHER
            self._odd[(position, "digest")] = sha256
        self._kinds[position] = kind

    def digest(self, position: int) -> str:
        kind = self._kinds[position]
        if kind == _PENDING:
            return ""
        if kind == _OTHER:
            return self._odd[(position, "digest")]
        start = position * _DIGEST
        hex_digest = self._digests[start : start + _DIGEST].hex()
        return PACKAGE_PREFIX + hex_digest if kind == _PACKAGE else hex_digest

    def filename(self, position: int) -> str:
        start = self._name_ends[position - 1] if position else 0
        return self._names[start : self._name_ends[position]].decode()

    def size(self, position: int) -> int:
        size = self._sizes[position]
        return size if size != _BIG else self._big[position]

    def package(self, position: int, filename: str | None = None) -> str:
        """The package name of a file (``filename``: its name, when the caller has it)."""
        length = self._package_lengths[position]
        if length == _NO_PREFIX:
            return self._odd[(position, "package")]
        return (filename or self.filename(position))[:length]

    def digests(self) -> Iterator[str]:
        """The digests known (pending files have none)."""
        return (self.digest(i) for i, kind in enumerate(self._kinds) if kind != _PENDING)

    @property
    def bytes(self) -> int:
        return sum(self._sizes) + sum(self._big.values()) - _BIG * len(self._big)

    def __len__(self) -> int:
        return len(self._name_ends)

    @overload
    def __getitem__(self, position: int) -> PublishedFile: ...

    @overload
    def __getitem__(self, position: slice) -> list[PublishedFile]: ...

    def __getitem__(self, position: int | slice) -> PublishedFile | list[PublishedFile]:
        if isinstance(position, slice):
            return [self[i] for i in range(len(self))[position]]
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(position)
        filename = self.filename(position)
        return PublishedFile(
            filename, self.digest(position), self.size(position), self.package(position, filename)
        )

    def __iter__(self) -> Iterator[PublishedFile]:
        return (self[i] for i in range(len(self)))


class Selection(Sequence[PublishedFile]):
    """Some files of a table, by position, each built when read (a publish links one at a time)."""

    __slots__ = ("_positions", "_table")

    def __init__(self, table: FileTable, positions: Sequence[int]) -> None:
        self._table = table
        self._positions = positions

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> PublishedFile: ...

    @overload
    def __getitem__(self, index: slice) -> list[PublishedFile]: ...

    def __getitem__(self, index: int | slice) -> PublishedFile | list[PublishedFile]:
        if isinstance(index, slice):
            return [self._table[i] for i in self._positions[index]]
        return self._table[self._positions[index]]

    def __iter__(self) -> Iterator[PublishedFile]:
        return (self._table[i] for i in self._positions)
