"""The identities a plan still waits for, each held as one short ``bytes``.

An identity is an index's (C:, S:) pair. As a tuple of a 30-character string
and an int it costs ~210 bytes a package with its dict slot; packed into one
``bytes`` (the size in 8 bytes, then the checksum's text) ~110. A fresh arch
waits for every package for as long as its downloads last. Identities go in
and come out as tuples; only the storage is packed.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

Identity = tuple[str, int]
Positions = int | list[int]  # of the files waiting for an identity (a list when several)

_SIZE = 8


def pack(identity: Identity) -> bytes:
    checksum, size = identity
    return size.to_bytes(_SIZE, "big") + checksum.encode()


def packed_size(packed: bytes) -> int:
    return int.from_bytes(packed[:_SIZE], "big")


def unpack(packed: bytes) -> Identity:
    return packed[_SIZE:].decode(), packed_size(packed)


def each(positions: Positions) -> list[int] | tuple[int]:
    """The positions as a sequence, one or several (stored bare when there is one)."""
    return positions if isinstance(positions, list) else (positions,)


class Waiting(MutableMapping[Identity, Positions]):
    """identity -> positions of the files waiting for it, in the order first added."""

    __slots__ = ("_packed",)

    def __init__(self) -> None:
        self._packed: dict[bytes, Positions] = {}

    def add(self, identity: Identity, position: int) -> None:
        packed = pack(identity)
        already = self._packed.get(packed)
        if already is None:
            self._packed[packed] = position
        elif isinstance(already, list):
            already.append(position)
        else:
            self._packed[packed] = [already, position]

    def snapshot(self) -> list[bytes]:
        """The identities waiting now, still packed (8 bytes a package for the list)."""
        return list(self._packed)

    def batches(self, size: int) -> Iterator[list[Identity]]:
        """The identities waiting now, ``size`` at a time (a store lookup's worth, not 25,000)."""
        packed = self.snapshot()
        for start in range(0, len(packed), size):
            yield [unpack(one) for one in packed[start : start + size]]

    def bytes_waiting(self) -> int:
        return sum(packed_size(packed) for packed in self._packed)

    def __getitem__(self, identity: Identity) -> Positions:
        return self._packed[pack(identity)]

    def __setitem__(self, identity: Identity, positions: Positions) -> None:
        self._packed[pack(identity)] = positions

    def take(self, identity: Identity) -> Positions | None:
        """Remove an identity; the positions that waited for it (None if it was not waiting)."""
        positions = self._packed.pop(pack(identity), None)
        if not self._packed:  # a dict keeps its table when emptied: 1.2 MiB at 25,000
            self._packed = {}
        return positions

    def __delitem__(self, identity: Identity) -> None:
        if self.take(identity) is None:
            raise KeyError(identity)

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, tuple) and pack(identity) in self._packed

    def __iter__(self) -> Iterator[Identity]:
        return (unpack(packed) for packed in list(self._packed))

    def __len__(self) -> int:
        return len(self._packed)
