"""Streaming identity of an apk v2 package, computed as its bytes arrive.

An apk v2 file is gzip(signature tar) + gzip(control tar) + gzip(data tar);
unsigned packages lack the first. While the bytes stream past, this computes:

* its size and mirrord's package key (``mirrord.core.objectkey``): from the
  SHA-256 of the head (signature and control streams) and of the data stream,
  so each byte is hashed with SHA-256 once;
* the index's ``C:`` identity: ``Q1`` + base64(SHA-1 of the raw control
  stream), or of control + data for old packages without ``datahash``;
* the SHA-256 of the raw data stream, to hold against ``.PKGINFO``'s
  ``datahash`` (``C:`` does not cover the data stream, ``datahash`` does).

Only the small signature and control streams are inflated (with a size cap);
the data stream is hashed raw.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from dataclasses import dataclass

from mirrord.alpine.signames import parse_signature_name
from mirrord.alpine.tarlite import TarFormatError, iter_members
from mirrord.core.errors import PackageFormatError, PackageVerifyError
from mirrord.core.model import PackageRef
from mirrord.core.objectkey import package_key

MAX_CONTROL_BYTES = 16 * 1024 * 1024
# zlib copies whatever input follows a stream's end (``unused_data``): feeding the
# signature and control streams in pieces keeps that copy small, where a chunk off
# the socket would have the whole rest of a package copied once per stream.
INFLATE_PIECE = 16 * 1024
# what mirrord reads of .PKGINFO; "key = value" lines, the key at the line's start,
# as apk-tools reads them
_PKGINFO_FIELD = re.compile(rb"^(pkgname|pkgver|datahash) = (.*)$", re.MULTILINE)


def q1(sha1_digest: bytes) -> str:
    return "Q1" + base64.b64encode(sha1_digest).decode("ascii")


def pkginfo_fields(pkginfo: bytes) -> dict[str, str]:
    """The first pkgname, pkgver and datahash a .PKGINFO gives (those it gives)."""
    fields: dict[str, str] = {}
    for key, value in _PKGINFO_FIELD.findall(pkginfo):
        fields.setdefault(key.decode("ascii"), value.strip().decode("utf-8", "replace"))
    return fields


@dataclass(frozen=True, slots=True)
class PackageDigest:
    key: str  # the store key: apk:<hex>, never the whole file's SHA-256
    size: int
    checksum: str  # what the index's C: must say
    datahash_declared: str | None  # from .PKGINFO
    datahash_actual: str  # SHA-256 of the raw data stream
    signer: str | None  # key name of the package's own signature member, if any
    pkgname: str | None
    pkgver: str | None


class PackageDigester:
    """Feed the package bytes in order; ``finish()`` returns its PackageDigest."""

    def __init__(self, filename: str, max_control_bytes: int = MAX_CONTROL_BYTES) -> None:
        self.filename = filename
        self._max_control = max_control_bytes
        self._head = hashlib.sha256()
        self.size = 0
        self._phase = "first"  # "first" (signature or control), "control", "data"
        self._inflater = zlib.decompressobj(31)
        self._plain = bytearray()
        self._stream_sha1 = hashlib.sha1()  # noqa: S324 - apk's C: is SHA-1 by definition
        self._data = hashlib.sha256()
        self._data_bytes = 0
        self._legacy: hashlib._Hash | None = None
        self._control_checksum: str | None = None
        self._datahash: str | None = None
        self._signer: str | None = None
        self._pkginfo: dict[str, str] = {}

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        self.size += len(chunk)
        view = memoryview(chunk)
        while view.nbytes:
            if self._phase == "data":
                self._data.update(view)
                self._data_bytes += view.nbytes
                if self._legacy is not None:
                    self._legacy.update(view)
                return
            piece = view[:INFLATE_PIECE]
            consumed, ended = self._inflate(piece)
            self._stream_sha1.update(piece[:consumed])
            self._head.update(piece[:consumed])
            view = view[consumed:]
            if ended:
                self._end_stream()

    def _inflate(self, view: memoryview) -> tuple[int, bool]:
        pending: bytes | memoryview = view
        try:
            while True:
                room = self._max_control - len(self._plain) + 1
                self._plain += self._inflater.decompress(pending, room)
                if len(self._plain) > self._max_control:
                    raise PackageFormatError(
                        self.filename, f"control stream inflates past {self._max_control} bytes"
                    )
                if self._inflater.eof:
                    return view.nbytes - len(self._inflater.unused_data), True
                if not self._inflater.unconsumed_tail:
                    return view.nbytes, False
                pending = self._inflater.unconsumed_tail
        except zlib.error as error:
            raise PackageFormatError(self.filename, f"not a gzip stream ({error})") from None

    def _end_stream(self) -> None:
        try:
            members = list(iter_members(bytes(self._plain)))
        except TarFormatError as error:
            raise PackageFormatError(
                self.filename, f"bad tar in {self._phase} stream: {error}"
            ) from None
        signature = parse_signature_name(members[0].name) if members else None
        if self._phase == "first" and signature is not None:
            self._signer = signature[0]
            self._phase = "control"
            self._inflater = zlib.decompressobj(31)
            self._plain = bytearray()
            self._stream_sha1 = hashlib.sha1()  # noqa: S324
            return
        pkginfo = next((m for m in members if m.name == ".PKGINFO"), None)
        if pkginfo is None:
            raise PackageFormatError(self.filename, "control stream has no .PKGINFO")
        self._pkginfo = pkginfo_fields(bytes(pkginfo.data))
        self._control_checksum = q1(self._stream_sha1.digest())
        datahash = self._pkginfo.get("datahash")
        if datahash:
            self._datahash = datahash.lower()
        else:
            self._legacy = self._stream_sha1.copy()
        self._plain = bytearray()
        self._phase = "data"

    def finish(self) -> PackageDigest:
        if self._phase != "data":
            raise PackageFormatError(self.filename, f"file ends inside the {self._phase} stream")
        if self._data_bytes == 0:
            raise PackageFormatError(self.filename, "no data stream")
        checksum = q1(self._legacy.digest()) if self._legacy is not None else self._control_checksum
        assert checksum is not None
        return PackageDigest(
            key=package_key(self.size, self._head.digest(), self._data.digest()),
            size=self.size,
            checksum=checksum,
            datahash_declared=self._datahash,
            datahash_actual=self._data.hexdigest(),
            signer=self._signer,
            pkgname=self._pkginfo.get("pkgname"),
            pkgver=self._pkginfo.get("pkgver"),
        )


def check_package(ref: PackageRef, digest: PackageDigest) -> None:
    """Raise PackageVerifyError unless the bytes are what the signed index promised."""
    if digest.checksum != ref.checksum:
        raise PackageVerifyError(ref.filename, "checksum (C:)", ref.checksum, digest.checksum)
    if digest.datahash_declared is not None and digest.datahash_declared != digest.datahash_actual:
        raise PackageVerifyError(
            ref.filename, "datahash", digest.datahash_declared, digest.datahash_actual
        )
    if digest.size != ref.size:
        raise PackageVerifyError(ref.filename, "size (S:)", str(ref.size), str(digest.size))


def digest_bytes(filename: str, data: bytes) -> PackageDigest:
    digester = PackageDigester(filename)
    digester.feed(data)
    return digester.finish()
