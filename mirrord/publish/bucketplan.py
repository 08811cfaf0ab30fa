"""Pure decisions for the S3 mirror of one arch: what to upload, check and delete.

The bucket holds the same keys as the tree (``<prefix><branch>/<repo>/<arch>/<file>``).
An object is trusted when the store reports the size and ETag its bytes must
have: the MD5 of the bytes for a single PUT, MD5 of the parts' MD5s plus
``-<parts>`` for a multipart upload. No I/O here: callers pass what they listed
and hashed and carry out the plan, files first, index last, deletions after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass


@dataclass(frozen=True)
class Listed:
    """One object as the bucket lists it."""

    key: str
    size: int
    etag: str  # without quotes


@dataclass(frozen=True)
class Source:
    """One object the bucket must hold: its key and where its bytes are known."""

    key: str
    sha256: str  # the stored object; "" when only the tree has it
    size: int


@dataclass(frozen=True)
class BucketPlan:
    upload: tuple[Source, ...]  # missing or different: upload, verify
    index: Source | None  # the index object, last; None when the bucket has it already
    delete: tuple[str, ...]  # listed by no index any more and gone from the tree


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part; the last one carries the rest."""
    count = max(1, -(-size // part_size))
    return [(i * part_size, min(part_size, size - i * part_size)) for i in range(count)]


def multipart(size: int, threshold: int) -> bool:
    return size >= threshold


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    return f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"


def to_compare(sources: Sequence[Source], listing: Mapping[str, Listed]) -> list[Source]:
    """The sources whose key the bucket lists with the right size: hash them to compare."""
    return [s for s in sources if (o := listing.get(s.key)) is not None and o.size == s.size]


def plan_bucket(
    files: Sequence[Source],
    index: Source,
    listing: Mapping[str, Listed],
    etags: Mapping[str, str],
    in_tree: Set[str],
) -> BucketPlan:
    """What makes the bucket serve this snapshot.

    ``etags`` maps source keys to the ETag their bytes must have (only those
    ``to_compare`` returned); ``in_tree`` is every key the tree still has
    (what the tree keeps for ``publish.grace`` the bucket keeps too).
    """

    def current(source: Source) -> bool:
        listed = listing.get(source.key)
        return (
            listed is not None
            and listed.size == source.size
            and etags.get(source.key) == listed.etag
        )

    wanted = {f.key for f in files} | {index.key}
    upload = tuple(f for f in files if not current(f))
    delete = tuple(sorted(k for k in listing if k not in wanted and k not in in_tree))
    return BucketPlan(upload, None if current(index) else index, delete)


def unverified(sent: Mapping[str, tuple[int, str]], listing: Mapping[str, Listed]) -> list[str]:
    """Keys whose size and ETag, as the store lists them, are not what was sent."""
    return [
        key
        for key, (size, etag) in sent.items()
        if (listed := listing.get(key)) is None or (listed.size, listed.etag) != (size, etag)
    ]
