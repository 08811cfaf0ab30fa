"""The identities a plan still waits for, held in columns: ~45 bytes a package.

An identity is an index's (C:, S:) pair. A fresh arch waits for every package
for as long as its downloads last, four arches at once at the main process's
peak. As a dict of packed ``bytes`` keys with int positions it cost ~150 bytes
a package; here each identity is an *entry*, numbered in the order first added:
28 bytes of record (the SHA-1 an Alpine ``Q1`` checksum encodes, then the size),
the position of its first file, and its number in an open-addressing slot
array for lookups by identity. Identities go in and come out as tuples; a
caller holding an entry's number (``snapshot``) reads and takes it by number.
"""

from __future__ import annotations

import binascii
import hashlib
from array import array
from collections.abc import Iterator, Mapping

Identity = tuple[str, int]
Positions = int | list[int]  # of the files waiting for an identity (a list when several)

_SIZE = 8
_DIGEST = 20  # the SHA-1 behind a "Q1" checksum
_RECORD = _DIGEST + _SIZE
_PREFIX = "Q1"
_GONE = 0xFFFFFFFF  # the first position of an entry no longer waiting
_EMPTY = -1  # a slot never used (one holding a gone entry is free again, but not empty)
_FIRST_SLOTS = 8
_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_LAST = frozenset(_BASE64[::4])  # the characters that can end 20 bytes' base64


def each(positions: Positions) -> list[int] | tuple[int]:
    """The positions as a sequence, one or several (stored bare when there is one)."""
    return positions if isinstance(positions, list) else (positions,)


def _record(identity: Identity) -> tuple[bytes, str | None]:
    """The fixed-width record of an identity, and its checksum when that is not canonical.

    A checksum that is not "Q1" + the base64 of 20 bytes (a test's stand-in, a
    future "Q2") is kept aside as text; its record holds a digest of that text
    so that it hashes and compares like the others.
    """
    checksum, size = identity
    digest = _q1_digest(checksum)
    odd = None
    if digest is None:
        digest, odd = _text_digest(checksum), checksum
    return digest + size.to_bytes(_SIZE, "big"), odd


def checksum_digest(checksum: str) -> bytes:
    """The 20 bytes a record holds for a C: field: its SHA-1, or a digest of its text."""
    return _q1_digest(checksum) or _text_digest(checksum)


def _text_digest(checksum: str) -> bytes:
    return hashlib.blake2b(checksum.encode(), digest_size=_DIGEST).digest()


def _q1_digest(checksum: str) -> bytes | None:
    # 20 bytes are 27 base64 characters and "=": the last character's 2 low bits are
    # padding, and only a text with them 0 encodes back to itself.
    if len(checksum) != 30 or not checksum.startswith(_PREFIX) or checksum[28] not in _LAST:
        return None
    try:
        digest = binascii.a2b_base64(checksum[2:], strict_mode=True)
    except ValueError:  # binascii.Error, or not ASCII
        return None
    return digest if len(digest) == _DIGEST else None


class Waiting(Mapping[Identity, Positions]):
    """identity -> positions of the files waiting for it, in the order first added.

    Entry numbers stay valid until the map empties: then its columns are freed
    (a plan whose downloads are done keeps it through the publish).
    """

    __slots__ = ("_count", "_firsts", "_odd", "_records", "_slots", "_twins", "_used")

    _records: bytearray  # per entry: digest, then size (big-endian)
    _firsts: array[int]  # per entry: the position of its first file, or _GONE
    _slots: array[int] | None  # entry numbers, by hash (None: dropped until a lookup)
    _used: int  # slots not _EMPTY (entries waiting or gone)
    _count: int  # entries waiting
    _odd: dict[int, str]  # entry -> a checksum that is not canonical
    _twins: dict[int, list[int]]  # entry -> the positions after its first

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._records = bytearray()
        self._firsts = array("I")
        self._slots = array("i", [_EMPTY]) * _FIRST_SLOTS
        self._used = 0
        self._count = 0
        self._odd = {}
        self._twins = {}

    # --- by identity ----------------------------------------------------------------

    def add(self, identity: Identity, position: int) -> None:
        record, odd = _record(identity)
        slot, entry = self._find(record, odd)
        if entry >= 0:
            self._twins.setdefault(entry, []).append(position)
            return
        entry = len(self._firsts)
        self._records += record
        self._firsts.append(position)
        if odd is not None:
            self._odd[entry] = odd
        slots = self._lookups()
        if slots[slot] == _EMPTY:
            self._used += 1
        slots[slot] = entry  # or over a gone entry's number
        self._count += 1
        if 2 * self._used > len(slots):
            self._rehash()

    def take(self, identity: Identity) -> Positions | None:
        """Remove an identity; the positions that waited for it (None if it was not waiting)."""
        return self.take_entry(self._find(*_record(identity))[1])

    def __getitem__(self, identity: Identity) -> Positions:
        entry = self._find(*_record(identity))[1]
        if entry < 0:
            raise KeyError(identity)
        return self.positions(entry)

    def __contains__(self, identity: object) -> bool:
        if not (isinstance(identity, tuple) and len(identity) == 2):
            return False
        checksum, size = identity
        if not (isinstance(checksum, str) and isinstance(size, int)):
            return False
        return self._find(*_record((checksum, size)))[1] >= 0

    # --- by entry -------------------------------------------------------------------

    def snapshot(self) -> array[int]:
        """The entries waiting now, in the order first added (4 bytes each)."""
        firsts = self._firsts
        return array("I", (entry for entry in range(len(firsts)) if firsts[entry] != _GONE))

    def identity(self, entry: int) -> Identity:
        start = entry * _RECORD
        odd = self._odd.get(entry)
        checksum = odd if odd is not None else _PREFIX + _b64(self._records, start)
        return checksum, self.size(entry)

    def size(self, entry: int) -> int:
        start = entry * _RECORD + _DIGEST
        return int.from_bytes(self._records[start : start + _SIZE], "big")

    def first(self, entry: int) -> int:
        """The position of the first file waiting for an entry."""
        first = self._firsts[entry]
        if first == _GONE:
            raise KeyError(entry)
        return first

    def positions(self, entry: int) -> Positions:
        """The positions of an entry still waiting."""
        first = self.first(entry)
        twins = self._twins.get(entry)
        return [first, *twins] if twins else first

    def take_entry(self, entry: int) -> Positions | None:
        """Stop waiting for an entry; its positions (None if it was not waiting)."""
        if not 0 <= entry < len(self._firsts) or self._firsts[entry] == _GONE:
            return None
        positions = self.positions(entry)
        self._twins.pop(entry, None)
        self._firsts[entry] = _GONE  # its slot now marks a place lookups probe past
        self._count -= 1
        if not self._count:
            self._clear()  # free the columns
        return positions

    # --- whole ----------------------------------------------------------------------

    def batches(self, size: int) -> Iterator[list[Identity]]:
        """The identities waiting now, ``size`` at a time (a store lookup's worth, not 25,000)."""
        entries = self.snapshot()
        for start in range(0, len(entries), size):
            yield [self.identity(entry) for entry in entries[start : start + size]]

    def bytes_waiting(self) -> int:
        return sum(map(self.size, self.snapshot()))

    def __iter__(self) -> Iterator[Identity]:
        return map(self.identity, self.snapshot())

    def __len__(self) -> int:
        return self._count

    def drop_lookups(self) -> None:
        """Free the slot array (~10 bytes a package) until the next lookup by identity.

        Downloads take their entries by number: from the first download to the
        last, a fresh arch would keep it for nothing.
        """
        self._slots, self._used = None, 0

    # --- the slot array -------------------------------------------------------------

    def _find(self, record: bytes, odd: str | None) -> tuple[int, int]:
        """(the slot holding the identity or where it would go, its entry or -1)."""
        slots, records, firsts = self._lookups(), self._records, self._firsts
        mask = len(slots) - 1
        slot = int.from_bytes(record[:8], "little") & mask  # _hash, inline: the hot path
        free = -1
        while (entry := slots[slot]) != _EMPTY:
            if firsts[entry] == _GONE:
                free = slot if free < 0 else free
            elif records[entry * _RECORD : entry * _RECORD + _RECORD] == record and (
                (odd is None and not self._odd) or self._odd.get(entry) == odd
            ):
                return slot, entry
            slot = (slot + 1) & mask
        return (slot if free < 0 else free), -1

    def _lookups(self) -> array[int]:
        if self._slots is None:
            self._rehash()
            assert self._slots is not None
        return self._slots

    def _rehash(self) -> None:
        """At least twice the slots there are entries waiting, and none holding a gone one."""
        capacity = _FIRST_SLOTS
        while capacity < 2 * self._count + 2:
            capacity *= 2
        slots = array("i", [_EMPTY]) * capacity
        mask = capacity - 1
        for entry in self.snapshot():
            slot = _hash(self._records[entry * _RECORD : (entry + 1) * _RECORD]) & mask
            while slots[slot] != _EMPTY:
                slot = (slot + 1) & mask
            slots[slot] = entry
        self._slots, self._used = slots, self._count


def _hash(record: bytes | bytearray) -> int:
    # A SHA-1's first bytes are as good as any hash of them, and the same in every process.
    return int.from_bytes(record[:8], "little")


def _b64(records: bytearray, start: int) -> str:
    return binascii.b2a_base64(records[start : start + _DIGEST], newline=False).decode()
