from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest

from mirrord.alpine.apkpackage import (
    INFLATE_PIECE,
    PackageDigester,
    check_package,
    digest_bytes,
    pkginfo_fields,
)
from mirrord.alpine.tarlite import END_OF_ARCHIVE, build_member
from mirrord.core.errors import PackageFormatError, PackageVerifyError
from mirrord.core.model import PackageRef
from mirrord.core.objectkey import package_key
from mirrord.demo.repogen import (
    PackageSpec,
    SigningKey,
    build_package,
    control_stream,
    data_stream,
    signature_stream,
)
from tests.helpers import FIXTURES, raw_streams


def test_real_alpine_package() -> None:
    blob = (FIXTURES / "alpine-baselayout-3.2.0-r23.aarch64.apk").read_bytes()
    signature, control, data = raw_streams(blob)
    digest = digest_bytes("alpine-baselayout-3.2.0-r23.apk", blob)
    expected_c = "Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode()
    assert digest.checksum == expected_c
    assert digest.datahash_declared == hashlib.sha256(data).hexdigest()
    assert digest.datahash_actual == digest.datahash_declared
    assert digest.signer == "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub"
    assert digest.pkgname == "alpine-baselayout" and digest.pkgver == "3.2.0-r23"
    head = hashlib.sha256(signature + control).digest()
    assert digest.key == package_key(11012, head, hashlib.sha256(data).digest())
    assert digest.key.startswith("apk:") and digest.size == 11012
    assert len(signature) == 666


@pytest.mark.parametrize("chunk", [1, 7, 511, 4096, 1 << 20])
def test_any_chunking_gives_the_same_digest(chunk: int) -> None:
    blob = (FIXTURES / "alpine-baselayout-3.2.0-r23.aarch64.apk").read_bytes()
    digester = PackageDigester("x.apk")
    for start in range(0, len(blob), chunk):
        digester.feed(blob[start : start + chunk])
    assert digester.finish() == digest_bytes("x.apk", blob)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("signed", [False, True])
def test_generated_packages_match_their_index_identity(
    signing_key: SigningKey, legacy: bool, signed: bool
) -> None:
    spec = PackageSpec("pkg", "1.0-r0", payload=300_000, legacy=legacy)
    built = build_package(spec, signing_key if signed else None)
    parts = raw_streams(built.data)
    assert len(parts) == (3 if signed else 2)
    control, data = parts[-2], parts[-1]
    covered = control + data if legacy else control
    assert built.checksum == "Q1" + base64.b64encode(hashlib.sha1(covered).digest()).decode()
    digest = digest_bytes(spec.filename, built.data)
    assert digest.checksum == built.checksum
    assert digest.datahash_declared == (None if legacy else hashlib.sha256(data).hexdigest())
    check_package(PackageRef(spec.filename, built.checksum, len(built.data)), digest)


def _ref(spec: PackageSpec, key: SigningKey) -> tuple[PackageRef, bytes]:
    built = build_package(spec, key)
    return PackageRef(spec.filename, built.checksum, len(built.data)), built.data


def test_altered_control_stream_is_a_checksum_mismatch(signing_key: SigningKey) -> None:
    spec = PackageSpec("victim", "1-r0", payload=5000)
    ref, blob = _ref(spec, signing_key)
    signature, _control, data = raw_streams(blob)
    other_control = control_stream(
        PackageSpec("victim", "1-r0", payload=5000, depends=("evil",)), data, 8192
    )
    with pytest.raises(PackageVerifyError) as caught:
        check_package(ref, digest_bytes(spec.filename, signature + other_control + data))
    assert caught.value.what == "checksum (C:)"
    assert caught.value.expected == ref.checksum and caught.value.actual != ref.checksum


def test_swapped_data_stream_keeps_c_but_fails_datahash_and_size(signing_key: SigningKey) -> None:
    spec = PackageSpec("victim", "1-r0", payload=5000)
    ref, blob = _ref(spec, signing_key)
    signature, control, _data = raw_streams(blob)
    assert hashlib.sha1(control).digest()  # the control stream stays as signed
    other = data_stream(PackageSpec("other", "9-r9", payload=7000, seed=99))
    swapped = signature + control + other
    digest = digest_bytes(spec.filename, swapped)
    assert digest.checksum == ref.checksum  # C: alone would let it through
    with pytest.raises(PackageVerifyError) as caught:
        check_package(ref, digest)
    assert caught.value.what == "datahash"
    assert digest.size != ref.size


def test_wrong_size_alone_is_caught(signing_key: SigningKey) -> None:
    spec = PackageSpec("pkg", "1-r0", payload=5000)
    ref, blob = _ref(spec, signing_key)
    lying = PackageRef(ref.filename, ref.checksum, ref.size + 1)
    with pytest.raises(PackageVerifyError, match="size"):
        check_package(lying, digest_bytes(spec.filename, blob))


def test_truncated_and_garbage_packages_are_format_errors(signing_key: SigningKey) -> None:
    _ref_unused, blob = _ref(PackageSpec("pkg", "1-r0", payload=5000), signing_key)
    parts = raw_streams(blob)
    with pytest.raises(PackageFormatError, match="ends inside"):
        digest_bytes("pkg", blob[: len(parts[0]) + 10])
    with pytest.raises(PackageFormatError, match="no data stream"):
        digest_bytes("pkg", parts[0] + parts[1])
    with pytest.raises(PackageFormatError, match="not a gzip stream"):
        digest_bytes("pkg", b"<html>502 Bad Gateway</html>")


def test_control_stream_bomb_is_refused(signing_key: SigningKey) -> None:
    bomb_tar = build_member(".PKGINFO", b"pkgname = x\n") + build_member("pad", b"\0" * (64 << 20))
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    control = compressor.compress(bomb_tar) + compressor.flush()
    blob = signature_stream(signing_key, control) + control + data_stream(PackageSpec("x", "1"))
    with pytest.raises(PackageFormatError, match="inflates past"):
        digest_bytes("x", blob)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("chunk", [7, INFLATE_PIECE - 1, 1 << 22])
def test_a_control_stream_longer_than_an_inflate_piece(signing_key: SigningKey, chunk: int) -> None:
    script = os.urandom(3 * INFLATE_PIECE)  # incompressible: the stream spans four pieces
    data = data_stream(PackageSpec("big", "1-r0", payload=100_000))
    pkginfo = f"pkgname = big\npkgver = 1-r0\ndatahash = {hashlib.sha256(data).hexdigest()}\n"
    control = _gzip(
        build_member(".PKGINFO", pkginfo.encode()) + build_member(".pre-install", script)
    )
    assert len(control) > 3 * INFLATE_PIECE
    blob = signature_stream(signing_key, control) + control + data
    digester = PackageDigester("big-1-r0.apk")
    for start in range(0, len(blob), chunk):
        digester.feed(blob[start : start + chunk])
    digest = digester.finish()
    assert digest.checksum == "Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode()
    assert digest.datahash_actual == digest.datahash_declared == hashlib.sha256(data).hexdigest()
    assert (digest.pkgname, digest.pkgver, digest.size) == ("big", "1-r0", len(blob))
    assert digest.signer == signing_key.name


def test_pkginfo_fields_are_read_as_apk_tools_reads_them() -> None:
    text = (
        b"# pkgname = commented\n"
        b" pkgver = indented\n"
        b"pkgdesc = pkgname = inside a value\n"
        b"pkgname = first\r\n"
        b"pkgname = second\n"
        b"datahash= no space\n"
        b"datahash = ABCDEF \n"
        b"depend = x\n"
    )
    assert pkginfo_fields(text) == {"pkgname": "first", "datahash": "ABCDEF"}
    assert pkginfo_fields(b"") == {}


def test_a_package_whose_pkginfo_has_no_datahash_is_legacy(signing_key: SigningKey) -> None:
    data = data_stream(PackageSpec("old", "1-r0", payload=5000))
    control = _gzip(build_member(".PKGINFO", b"pkgname = old\n# datahash = 00\n") + END_OF_ARCHIVE)
    digest = digest_bytes("old-1-r0.apk", signature_stream(signing_key, control) + control + data)
    expected = hashlib.sha1(control + data).digest()
    assert digest.datahash_declared is None
    assert digest.checksum == "Q1" + base64.b64encode(expected).decode()
