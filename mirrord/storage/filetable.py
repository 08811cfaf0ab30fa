"""A snapshot's file list held column by column: ~100 bytes a package instead of ~370.

A plan keeps its arch's file list from planning until the record is written,
through every download: at 100,000 packages one ``PublishedFile`` per package
(an object, its size as an int, its package name and its 68-character key as
strings) was the main process's largest cost. Here a file is its name's UTF-8
bytes in one buffer with its end in an ``array``, the length of its package
name as a prefix of that name, its size in 4 bytes (larger ones aside), its
key as 32 bytes plus a kind byte, and the 20 bytes of its index entry's C:
(so that the next index's unchanged entries are known without a lookup).
``PublishedFile`` values are built when read, so callers see the same records.

A snapshot's record is these columns as they are (``encode`` / ``decode``): an
incremental publish at 100,000 packages reads the previous list and writes
the new one, and text rows cost ~0.7 CPU-s to build and parse where the
columns cost ~50 ms.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from array import array
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import chain, pairwise
from typing import overload

from mirrord.core.model import PublishedFile
from mirrord.core.objectkey import PACKAGE_PREFIX, is_key

_PENDING, _PLAIN, _PACKAGE, _OTHER = 0, 1, 2, 3  # kinds of digest
_NO_PREFIX = 0xFFFF  # the package name is not a prefix of the file name: kept aside
_BIG = 0xFFFFFFFF  # a size of 4 GiB or more: kept aside
_DIGEST = 32
_CHECKSUM = 20  # the identity behind an index's C: field (see ``publish.waiting``)
_NO_CHECKSUM = bytes(_CHECKSUM)
# A record: magic, count, the compressed columns' length and the CRC-32 of what
# follows them; then the compressed columns (names, name ends, package lengths,
# sizes, kinds), the digests and the checksums as they are (random bytes do not
# compress) and the rare values as JSON.
_MAGIC = b"mirrord-files-1\n"
_HEADER = struct.Struct("<16sIII")


def _packed(sha256: str) -> tuple[int, bytes]:
    """A digest's kind and the bytes a table compares (a stand-in's are its UTF-8 text)."""
    if not sha256:
        return _PENDING, b""
    if is_key(sha256):
        package = sha256.startswith(PACKAGE_PREFIX)
        hex_digest = sha256[len(PACKAGE_PREFIX) :] if package else sha256
        return (_PACKAGE if package else _PLAIN), bytes.fromhex(hex_digest)
    return _OTHER, sha256.encode()


def _little_endian(column: array[int]) -> bytes:
    if sys.byteorder == "little":
        return column.tobytes()
    swapped = array(column.typecode, column)
    swapped.byteswap()
    return swapped.tobytes()


def _column(typecode: str, data: bytes | memoryview) -> array[int]:
    column = array(typecode)
    column.frombytes(data)
    if sys.byteorder != "little":
        column.byteswap()
    return column


class FileTable(Sequence[PublishedFile]):
    """An ordered, fixed-length list of published files whose digests can be set."""

    __slots__ = (
        "_big",
        "_checksums",
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
        self._checksums = bytearray()  # zeros: not known (a list recorded before they were)
        # Rare values that do not fit the columns: (position, "package"|"digest") -> text.
        self._odd: dict[tuple[int, str], str] = {}
        self._big: dict[int, int] = {}  # position -> a size of 4 GiB or more
        for file in files:
            self.append(file.filename, file.sha256, file.size, file.package)

    def append(
        self, filename: str, sha256: str, size: int, package: str, checksum: bytes = b""
    ) -> None:
        """A file; ``checksum``: the 20 bytes of its index entry's C: field, when known."""
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
        self._checksums += checksum if len(checksum) == _CHECKSUM else _NO_CHECKSUM
        self.set_digest(position, sha256)

    @staticmethod
    def is_record(blob: bytes) -> bool:
        """Is this a record ``encode`` wrote (and not an older kind of file list)?"""
        return blob.startswith(_MAGIC)

    def encode(self) -> bytes:
        """The table as a snapshot's record (``decode`` reads it back)."""
        packed = zlib.compress(
            b"".join(
                (
                    self._names,
                    _little_endian(self._name_ends),
                    _little_endian(self._package_lengths),
                    _little_endian(self._sizes),
                    self._kinds.tobytes(),
                )
            ),
            1,
        )
        rare = json.dumps(
            {
                "package": {p: text for (p, what), text in self._odd.items() if what == "package"},
                "digest": {p: text for (p, what), text in self._odd.items() if what == "digest"},
                "big": self._big,
            }
        ).encode()
        unpacked = zlib.crc32(rare, zlib.crc32(self._checksums, zlib.crc32(self._digests)))
        header = _HEADER.pack(_MAGIC, len(self), len(packed), unpacked)
        return b"".join((header, packed, self._digests, self._checksums, rare))

    @classmethod
    def decode(cls, blob: bytes) -> FileTable:
        """A table from ``encode``'s record; ValueError when the record is damaged."""
        try:
            return cls._decode(blob)
        except (struct.error, zlib.error, LookupError, TypeError, AttributeError) as error:
            raise ValueError(f"a damaged file list: {error}") from None

    @classmethod
    def _decode(cls, blob: bytes) -> FileTable:
        magic, count, packed_length, unpacked = _HEADER.unpack_from(blob)
        if magic != _MAGIC:
            raise ValueError("not a file list in columns")
        end = _HEADER.size + packed_length
        digests_end = end + _DIGEST * count
        checksums_end = digests_end + _CHECKSUM * count
        if zlib.crc32(blob[end:]) != unpacked:
            raise ValueError("the CRC-32 of the digests, checksums and rare values does not match")
        columns = memoryview(zlib.decompress(blob[_HEADER.size : end]))
        names_length = len(columns) - count * (4 + 2 + 4 + 1)
        if names_length < 0 or len(blob) < checksums_end:
            raise ValueError("the columns are shorter than the count of files")
        table = cls()
        table._names = bytearray(columns[:names_length])
        at = names_length
        table._name_ends = _column("I", columns[at : at + 4 * count])
        at += 4 * count
        table._package_lengths = _column("H", columns[at : at + 2 * count])
        at += 2 * count
        table._sizes = _column("I", columns[at : at + 4 * count])
        at += 4 * count
        table._kinds = array("B", columns[at:])
        table._digests = bytearray(blob[end:digests_end])
        table._checksums = bytearray(blob[digests_end:checksums_end])
        rare = json.loads(blob[checksums_end:])
        for what in ("package", "digest"):
            for position, text in rare[what].items():
                table._odd[(int(position), what)] = str(text)
        table._big = {int(position): int(size) for position, size in rare["big"].items()}
        if count and table._name_ends[-1] != names_length:
            raise ValueError("the names column does not end where the names do")
        return table

    def set_digest(self, position: int, sha256: str) -> None:
        self._odd.pop((position, "digest"), None)
        kind, raw = _packed(sha256)
        if kind in (_PACKAGE, _PLAIN):
            start = position * _DIGEST
            self._digests[start : start + _DIGEST] = raw
        elif kind == _OTHER:  # not an object key (a test's stand-in): kept as it came
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

    def names(self) -> list[str]:
        """Every file name, in order (one decode of the whole column when it is ASCII)."""
        data = bytes(self._names)
        spans = pairwise(chain((0,), self._name_ends))
        if data.isascii():
            text = data.decode("ascii")
            return [text[start:end] for start, end in spans]
        return [data[start:end].decode() for start, end in spans]

    def package_names(self, names: Sequence[str] | None = None) -> set[str]:
        """Every file's package name (``names``: ``self.names()``, when the caller has it)."""
        packages = {
            name[:length]
            for name, length in zip(names or self.names(), self._package_lengths, strict=True)
            if length != _NO_PREFIX
        }
        packages.update(text for (_, what), text in self._odd.items() if what == "package")
        return packages

    def name_positions(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Each file name's position (``names``: ``self.names()``, when the caller has it)."""
        return {name: position for position, name in enumerate(names or self.names())}

    def same_package(self, position: int, checksum: bytes, size: int) -> bool:
        """Is this file known (not pending) as the package of this checksum and size?"""
        start = position * _CHECKSUM
        return (
            checksum != _NO_CHECKSUM
            and self._checksums[start : start + _CHECKSUM] == checksum
            and self.size(position) == size
            and self._kinds[position] != _PENDING
        )

    def copy_digest(self, position: int, other: FileTable, other_position: int) -> None:
        """Give a file the digest of another table's file (as ``set_digest``, without text)."""
        kind = other._kinds[other_position]
        if kind in (_OTHER, _PENDING):
            self.set_digest(position, other.digest(other_position))
            return
        self._odd.pop((position, "digest"), None)
        start, other_start = position * _DIGEST, other_position * _DIGEST
        self._digests[start : start + _DIGEST] = other._digests[other_start : other_start + _DIGEST]
        self._kinds[position] = kind

    def pending(self, position: int) -> bool:
        return self._kinds[position] == _PENDING

    def same_digest(self, position: int, other: FileTable, other_position: int) -> bool:
        """Do these two files have the same digest (as ``digest`` compares, without the text)?"""
        kind = self._kinds[position]
        if kind != other._kinds[other_position]:
            return False
        if kind == _OTHER:
            return self.digest(position) == other.digest(other_position)
        start, other_start = position * _DIGEST, other_position * _DIGEST
        return (
            self._digests[start : start + _DIGEST]
            == other._digests[other_start : other_start + _DIGEST]
        )

    def positions_of(self, digests: Collection[str]) -> list[int]:
        """The positions of the files whose digest is one of these."""
        wanted: dict[int, set[bytes]] = {}
        for digest in digests:
            kind, raw = _packed(digest)
            wanted.setdefault(kind, set()).add(raw)
        found: list[int] = []
        for position, kind in enumerate(self._kinds):
            if kind == _OTHER:
                raw = self._odd[(position, "digest")].encode()
            elif kind in wanted:
                start = position * _DIGEST
                raw = bytes(self._digests[start : start + _DIGEST])
            else:
                continue
            if raw in wanted.get(kind, ()):
                found.append(position)
        return found

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
