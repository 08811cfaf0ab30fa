"""APKINDEX.tar.gz: split, verify the signature, parse and sanity-check entries.

Pure: bytes in, typed records or an IndexRejectedError out.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from mirrord.alpine.signing import Keyring, SignatureMember, parse_signature_name
from mirrord.alpine.tarlite import TarFormatError, iter_members
from mirrord.core.errors import IndexFormatError, SignatureError, UnsafeIndexError
from mirrord.core.model import PackageRef

_ALLOWED_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_+.@~-]*$")
_ALLOWED_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.~-]*$")
_MAX_FILENAME = 250
NOARCH = "noarch"  # a package any arch's index may list


@dataclass(frozen=True, slots=True)
class RawStream:
    raw: bytes  # the compressed bytes exactly as they appear in the file
    data: bytearray  # what they decompress to


def split_gzip_streams(blob: bytes, max_output: int) -> list[RawStream]:
    """Split concatenated gzip members, refusing more than ``max_output`` bytes in total."""
    streams: list[RawStream] = []
    pos = 0
    budget = max_output
    while pos < len(blob):
        inflater = zlib.decompressobj(31)
        chunk = memoryview(blob)[pos:]
        out = bytearray()
        pending: bytes | memoryview = chunk
        try:
            while True:
                out += inflater.decompress(pending, budget - len(out) + 1)
                if len(out) > budget:
                    raise IndexFormatError(
                        f"decompresses to more than {max_output} bytes (limits.max_index_bytes)"
                    )
                if inflater.eof or not inflater.unconsumed_tail:
                    break
                pending = inflater.unconsumed_tail
        except zlib.error as error:
            raise IndexFormatError(f"gzip stream {len(streams) + 1} is corrupt: {error}") from None
        if not inflater.eof:
            raise IndexFormatError(f"gzip stream {len(streams) + 1} is truncated")
        consumed = len(chunk) - len(inflater.unused_data)
        streams.append(RawStream(blob[pos : pos + consumed], out))
        budget -= len(out)
        pos += consumed
    return streams


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    checksum: str
    size: int
    arch: str | None = None
    # Built once: the plan, the fetch list and the snapshot all share this string.
    filename: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.filename:
            object.__setattr__(self, "filename", f"{self.name}-{self.version}.apk")

    def ref(self) -> PackageRef:
        return PackageRef(self.filename, self.checksum, self.size)


@dataclass(frozen=True, slots=True)
class IndexArchive:
    signer: str | None  # trusted key name, or None for an accepted unsigned index
    description: str
    entries: tuple[IndexEntry, ...]


@dataclass(frozen=True, slots=True)
class VerifiedIndex:
    """An index whose signature and layout are checked; its entries are read on demand."""

    signer: str | None  # trusted key name, or None for an accepted unsigned index
    description: str
    text: bytearray  # the inflated index stream; the APKINDEX member is text[start:end]
    start: int
    end: int
    max_package_bytes: int

    def entries(self, arch: str | None = None) -> Iterator[IndexEntry]:
        """Each entry in index order; raises as soon as one is unsafe (see ``iter_entries``)."""
        return iter_entries(self.text, self.max_package_bytes, self.start, self.end, arch)


# Every character _check_path_text accepts (\s is str.isspace's set, space included):
# one scan in C for the common case; the checks below say what is wrong.
_PATH_TEXT = re.compile(r"[^\x00-\x1f\x7f/\\\s]*")


def _check_path_text(field: str, value: str, package: str | None) -> None:
    if _PATH_TEXT.fullmatch(value) and ".." not in value and not value.startswith("."):
        return
    if "\0" in value:
        raise UnsafeIndexError(field, value, "contains NUL", package)
    if "/" in value or "\\" in value:
        raise UnsafeIndexError(field, value, "contains a path separator", package)
    if ".." in value:
        raise UnsafeIndexError(field, value, "contains '..'", package)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UnsafeIndexError(field, value, "contains a control character", package)
    if value.startswith("."):
        raise UnsafeIndexError(field, value, "starts with '.'", package)
    if any(c.isspace() for c in value):
        raise UnsafeIndexError(field, value, "contains white space", package)


def _checksum_ok(value: str) -> bool:
    if not value.startswith("Q1") or len(value) != 30:
        return False
    try:
        return len(base64.b64decode(value[2:], validate=True)) == 20
    except (binascii.Error, ValueError):
        return False


def _entry(
    fields: dict[str, str], line_number: int, max_package_bytes: int, arch: str | None = None
) -> IndexEntry:
    name = fields.get("P")
    if name is None:
        raise IndexFormatError(f"entry ending at line {line_number} has no P: (package name)")
    _check_path_text("P", name, name)
    if not _ALLOWED_NAME.match(name):
        raise UnsafeIndexError("P", name, "not a valid package name", name)
    version = fields.get("V")
    if version is None:
        raise IndexFormatError(f"package {name!r} has no V: (version)")
    _check_path_text("V", version, name)
    if not _ALLOWED_VERSION.match(version):
        raise UnsafeIndexError("V", version, "not a valid version", name)
    if len(name) + len(version) + 5 > _MAX_FILENAME:
        raise UnsafeIndexError("P", name, "file name too long", name)
    checksum = fields.get("C")
    if checksum is None:
        raise IndexFormatError(f"package {name!r} has no C: (checksum)")
    if not _checksum_ok(checksum):
        raise UnsafeIndexError("C", checksum, "not a Q1 (SHA-1) checksum", name)
    size_text = fields.get("S")
    if size_text is None:
        raise IndexFormatError(f"package {name!r} has no S: (size)")
    if not (size_text.isascii() and size_text.isdigit()):  # "²" is a digit to isdigit()
        raise UnsafeIndexError("S", size_text, "not a non-negative whole number", name)
    size = int(size_text)
    if size <= 0 or size > max_package_bytes:
        raise UnsafeIndexError(
            "S",
            size_text,
            f"absurd size (limit {max_package_bytes}, limits.max_package_bytes)",
            name,
        )
    built_for = fields.get("A")
    if arch is not None and built_for is not None and built_for not in (arch, NOARCH):
        raise UnsafeIndexError(
            "A", built_for, f"a package for another arch in the index of {arch}", name
        )
    return IndexEntry(name, version, checksum, size, built_for)


_WANTED = frozenset(b"CPVSA")


def _decoded(fields: dict[int, bytes], line_number: int) -> dict[str, str]:
    try:
        decoded = {chr(key): value.decode("utf-8") for key, value in fields.items()}
        if "A" in decoded:  # a handful of arches: share one string each
            decoded["A"] = sys.intern(decoded["A"])
        return decoded
    except UnicodeDecodeError as error:
        raise IndexFormatError(
            f"entry ending at line {line_number} is not UTF-8: {error}"
        ) from None


def iter_entries(
    data: bytes | bytearray,
    max_package_bytes: int,
    start: int = 0,
    end: int | None = None,
    arch: str | None = None,
) -> Iterator[IndexEntry]:
    """The entries of the APKINDEX text in ``data[start:end]``, one at a time, each checked.

    Refuses duplicates and unsafe names as it goes, and with ``arch`` a package
    built for another arch (not ``noarch``): an index served at the wrong path
    would have apk clients install binaries that cannot run. A caller that keeps only
    what it needs of each entry never holds the whole index as objects.
    Line by line in place, decoding only the fields mirrord uses: an index of
    100,000 packages never exists as a copy, one big str or a list of lines.
    """
    stop = len(data) if end is None else end
    seen: set[str] = set()
    fields: dict[int, bytes] = {}
    number = 0
    pos = start
    while pos < stop:
        newline = data.find(b"\n", pos, stop)
        line_end = stop if newline < 0 else newline
        number += 1
        if line_end > pos:
            if line_end - pos < 2 or data[pos + 1] != 0x3A:  # "X:value"
                shown = bytes(data[pos : min(line_end, pos + 60)]).decode("utf-8", "replace")
                raise IndexFormatError(f"line {number}: expected 'X:value', got {shown!r}")
            key = data[pos]
            if key in _WANTED:
                if key in fields:
                    raise IndexFormatError(
                        f"line {number}: field {chr(key)}: repeated within one entry"
                    )
                fields[key] = bytes(data[pos + 2 : line_end])
        elif fields:
            yield _unseen(seen, _entry(_decoded(fields, number), number, max_package_bytes, arch))
            fields = {}
        pos = line_end + 1
    if fields:
        yield _unseen(seen, _entry(_decoded(fields, number), number, max_package_bytes, arch))


def parse_entries(
    data: bytes | bytearray, max_package_bytes: int, start: int = 0, end: int | None = None
) -> tuple[IndexEntry, ...]:
    """Every entry of the APKINDEX text in ``data[start:end]`` (see ``iter_entries``)."""
    return tuple(iter_entries(data, max_package_bytes, start, end))


def _unseen(seen: set[str], entry: IndexEntry) -> IndexEntry:
    if entry.filename in seen:
        raise UnsafeIndexError("P", entry.name, f"{entry.filename} is listed twice", entry.name)
    seen.add(entry.filename)
    return entry


def _signatures(stream: RawStream) -> list[SignatureMember] | None:
    """The signature members of a first stream, or None when it is not a signature stream."""
    try:
        members = list(iter_members(stream.data))
    except TarFormatError as error:
        raise IndexFormatError(f"first stream is not a tar: {error}") from None
    if not members or parse_signature_name(members[0].name) is None:
        return None
    found: list[SignatureMember] = []
    for member in members:
        parsed = parse_signature_name(member.name)
        if parsed is None:
            raise IndexFormatError(f"unexpected member {member.name!r} in the signature stream")
        key_name, digest = parsed
        if not key_name or "/" in key_name or key_name.startswith("."):
            raise SignatureError(key_name, "invalid key name in signature member")
        found.append(SignatureMember(key_name, digest, bytes(member.data)))
    return found


def read_index_archive(
    blob: bytes,
    keyring: Keyring,
    *,
    allow_untrusted: bool,
    max_index_bytes: int,
    max_package_bytes: int,
    arch: str | None = None,
) -> IndexArchive:
    """Verify and parse an APKINDEX.tar.gz exactly as fetched from the origin.

    With ``arch``, a package built for another arch is refused (see ``iter_entries``).
    """
    index = open_index_archive(
        blob,
        keyring,
        allow_untrusted=allow_untrusted,
        max_index_bytes=max_index_bytes,
        max_package_bytes=max_package_bytes,
    )
    return IndexArchive(index.signer, index.description, tuple(index.entries(arch)))


def open_index_archive(
    blob: bytes,
    keyring: Keyring,
    *,
    allow_untrusted: bool,
    max_index_bytes: int,
    max_package_bytes: int,
) -> VerifiedIndex:
    """Verify an APKINDEX.tar.gz exactly as fetched; its entries are checked as they are read."""
    streams = split_gzip_streams(blob, max_index_bytes)
    if not streams:
        raise IndexFormatError("empty file")
    signatures = _signatures(streams[0])
    signer: str | None = None
    if signatures is not None:
        if len(streams) != 2:
            raise IndexFormatError(
                f"expected 2 gzip streams (signature, index), found {len(streams)}"
            )
        content = streams[1]
        trusted = [s for s in signatures if s.key_name in keyring]
        if trusted:
            keyring.verify(trusted[0], content.raw)
            signer = trusted[0].key_name
        elif not allow_untrusted:
            keyring.verify(signatures[0], content.raw)  # raises: names the untrusted key
    else:
        if len(streams) != 1:
            raise IndexFormatError(f"unsigned index with {len(streams)} gzip streams")
        if not allow_untrusted:
            raise SignatureError(None, "index is not signed (no .SIGN.RSA member)")
        content = streams[0]

    description = ""
    span: tuple[int, int] | None = None
    try:
        for member in iter_members(content.data):
            if member.name == "DESCRIPTION":
                description = bytes(member.data).decode("utf-8", "replace").strip()
            elif member.name == "APKINDEX":
                span = (member.start, member.start + len(member.data))
    except TarFormatError as error:
        raise IndexFormatError(f"index stream is not a tar: {error}") from None
    if span is None:
        raise IndexFormatError("no APKINDEX member in the index stream")
    return VerifiedIndex(signer, description, content.data, *span, max_package_bytes)
