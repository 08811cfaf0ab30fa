from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from pathlib import Path

import pytest

from mirrord.alpine.apkindex import (
    _PATH_TEXT,
    VerifiedIndex,
    open_index_archive,
    read_index_archive,
    split_gzip_streams,
)
from mirrord.alpine.signing import Keyring
from mirrord.alpine.tarlite import build_member, iter_members
from mirrord.core.errors import IndexFormatError, SignatureError, UnsafeIndexError
from mirrord.demo.repogen import PackageSpec, SigningKey, build_index, build_package
from tests.helpers import FIXTURES

LIMIT = 256 << 20
PKG_LIMIT = 4 << 30

REAL = [
    ("v3.16-main-x86_64-APKINDEX.tar.gz", 4929, "v3.16.3-13-g4d933a1fa3", "6165ee59"),
    ("v3.17-main-aarch64-APKINDEX.tar.gz", 5004, "v3.17.3-216-g54a39ace82a", "616ae350"),
]


def read(blob: bytes, keyring: Keyring, *, untrusted: bool = False, limit: int = LIMIT) -> object:
    return read_index_archive(
        blob, keyring, allow_untrusted=untrusted, max_index_bytes=limit, max_package_bytes=PKG_LIMIT
    )


def opened(blob: bytes, keyring: Keyring) -> VerifiedIndex:
    return open_index_archive(
        blob, keyring, allow_untrusted=False, max_index_bytes=LIMIT, max_package_bytes=PKG_LIMIT
    )


@pytest.fixture(scope="module")
def alpine_keys() -> Keyring:
    return Keyring.load(FIXTURES / "keys")


@pytest.mark.parametrize(("name", "count", "description", "key"), REAL)
def test_real_alpine_index_parses_completely_and_verifies(
    alpine_keys: Keyring, name: str, count: int, description: str, key: str
) -> None:
    archive = read_index_archive(
        (FIXTURES / name).read_bytes(),
        alpine_keys,
        allow_untrusted=False,
        max_index_bytes=LIMIT,
        max_package_bytes=PKG_LIMIT,
    )
    assert len(archive.entries) == count
    assert archive.description == description
    assert archive.signer == f"alpine-devel@lists.alpinelinux.org-{key}.rsa.pub"
    assert len({e.filename for e in archive.entries}) == count
    assert all(e.checksum.startswith("Q1") and e.size > 0 for e in archive.entries)


def test_real_index_total_size_matches_published_figure(alpine_keys: Keyring) -> None:
    archive = read_index_archive(
        (FIXTURES / REAL[0][0]).read_bytes(),
        alpine_keys,
        allow_untrusted=False,
        max_index_bytes=LIMIT,
        max_package_bytes=PKG_LIMIT,
    )
    sizes = sorted(e.size for e in archive.entries)
    assert round(sum(sizes) / 1e9, 2) == 3.40
    assert sizes[-1] > 130_000_000 * 0.99


@pytest.mark.parametrize("name", [r[0] for r in REAL])
def test_one_flipped_bit_in_the_signed_stream_fails(alpine_keys: Keyring, name: str) -> None:
    original = (FIXTURES / name).read_bytes()
    first = split_gzip_streams(original, LIMIT)[0]
    # A bit of the gzip header's MTIME: the stream still inflates, so only
    # the RSA signature over the raw bytes can tell.
    blob = bytearray(original)
    blob[len(first.raw) + 4] ^= 0x01
    with pytest.raises(SignatureError, match="does not match"):
        read(bytes(blob), alpine_keys)
    # A bit inside the deflate payload: corrupt stream or bad signature, never accepted.
    blob = bytearray(original)
    blob[len(first.raw) + 5000] ^= 0x01
    with pytest.raises((SignatureError, IndexFormatError)):
        read(bytes(blob), alpine_keys)


def test_flipped_bit_that_still_inflates_is_caught_by_the_signature(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    package = build_package(PackageSpec("a", "1-r0"), signing_key)
    blob = bytearray(build_index([package], signing_key))
    first_len = len(split_gzip_streams(bytes(blob), LIMIT)[0].raw)
    # The gzip header's MTIME field is not checked by zlib: the stream still
    # inflates, only the signature can tell.
    blob[first_len + 4] ^= 0x01
    keyring = Keyring.load(_keys(tmp_path, signing_key))
    with pytest.raises(SignatureError, match="does not match"):
        read(bytes(blob), keyring)


def test_unknown_key_fails_and_names_the_key(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.mkdir()
    (empty / "someone-else.rsa.pub").write_bytes(SigningKey.generate("x").public_pem())
    with pytest.raises(SignatureError) as caught:
        read((FIXTURES / REAL[0][0]).read_bytes(), Keyring.load(empty))
    assert caught.value.key_name == "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
    assert "not a trusted key" in str(caught.value)


def _keys(tmp_path: Path, key: SigningKey) -> Path:
    directory = tmp_path / "k"
    key.write_public(directory)
    return directory


def test_rsa256_signatures_verify(tmp_path: Path, signing_key: SigningKey) -> None:
    package = build_package(PackageSpec("a", "1-r0"), signing_key)
    blob = build_index([package], signing_key, signature_digest="sha256")
    archive = read_index_archive(
        blob,
        Keyring.load(_keys(tmp_path, signing_key)),
        allow_untrusted=False,
        max_index_bytes=LIMIT,
        max_package_bytes=PKG_LIMIT,
    )
    assert [e.filename for e in archive.entries] == ["a-1-r0.apk"]


def test_rsa512_signature_verifies_and_a_flipped_bit_fails(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    package = build_package(PackageSpec("a", "1-r0"), signing_key)
    blob = build_index([package], signing_key, signature_digest="sha512")
    first = split_gzip_streams(blob, LIMIT)[0]
    names = [m.name for m in iter_members(first.data)]
    assert names == [f".SIGN.RSA512.{signing_key.name}"]
    keyring = Keyring.load(_keys(tmp_path, signing_key))
    archive = read_index_archive(
        blob, keyring, allow_untrusted=False, max_index_bytes=LIMIT, max_package_bytes=PKG_LIMIT
    )
    assert [e.filename for e in archive.entries] == ["a-1-r0.apk"]
    assert archive.signer == signing_key.name
    flipped = bytearray(blob)
    flipped[len(first.raw) + 4] ^= 0x01  # gzip MTIME: still inflates, only RSA/SHA-512 can tell
    with pytest.raises(SignatureError, match="RSA/sha512 signature does not match"):
        read(bytes(flipped), keyring)


def test_rsa512_signature_by_sha256_is_refused(tmp_path: Path, signing_key: SigningKey) -> None:
    """A signature computed over SHA-256 but named RSA512 must not verify."""
    package = build_package(PackageSpec("a", "1-r0"), signing_key)
    honest = build_index([package], signing_key, signature_digest="sha256")
    first = split_gzip_streams(honest, LIMIT)[0]
    content = honest[len(first.raw) :]
    wrong = build_member(f".SIGN.RSA512.{signing_key.name}", signing_key.sign(content, "sha256"))
    blob = gzip.compress(wrong) + content
    with pytest.raises(SignatureError, match="does not match"):
        read(blob, Keyring.load(_keys(tmp_path, signing_key)))


def test_unsigned_index_needs_allow_untrusted(tmp_path: Path, signing_key: SigningKey) -> None:
    package = build_package(PackageSpec("a", "1-r0"), None)
    blob = build_index([package], None)
    keyring = Keyring.load(_keys(tmp_path, signing_key))
    with pytest.raises(SignatureError, match="not signed"):
        read(blob, keyring)
    archive = read_index_archive(
        blob, keyring, allow_untrusted=True, max_index_bytes=LIMIT, max_package_bytes=PKG_LIMIT
    )
    assert archive.signer is None and len(archive.entries) == 1


def test_signed_by_untrusted_key_fails_even_when_a_trusted_one_exists(
    tmp_path: Path, signing_key: SigningKey, other_key: SigningKey
) -> None:
    package = build_package(PackageSpec("a", "1-r0"), other_key)
    blob = build_index([package], other_key)
    with pytest.raises(SignatureError) as caught:
        read(blob, Keyring.load(_keys(tmp_path, signing_key)))
    assert caught.value.key_name == other_key.name


def _index_with_text(key: SigningKey, text: str) -> bytes:
    return build_index([], key, text=text)


GOOD_C = "Q1" + "A" * 27 + "="


@pytest.mark.parametrize(
    ("entry", "field", "reason"),
    [
        (f"C:{GOOD_C}\nP:../../etc/passwd\nV:1-r0\nS:10\n", "P", "path separator"),
        (f"C:{GOOD_C}\nP:evil\nV:1/../../x\nS:10\n", "V", "path separator"),
        (f"C:{GOOD_C}\nP:a..b\nV:1-r0\nS:10\n", "P", "'..'"),
        (f"C:{GOOD_C}\nP:nul\0name\nV:1-r0\nS:10\n", "P", "NUL"),
        (f"C:{GOOD_C}\nP:bell\x07\nV:1-r0\nS:10\n", "P", "control character"),
        (f"C:{GOOD_C}\nP:.hidden\nV:1-r0\nS:10\n", "P", "starts with '.'"),
        (f"C:{GOOD_C}\nP:sp ace\nV:1-r0\nS:10\n", "P", "white space"),
        (f"C:{GOOD_C}\nP:neg\nV:1-r0\nS:-5\n", "S", "non-negative"),
        (f"C:{GOOD_C}\nP:huge\nV:1-r0\nS:99999999999999\n", "S", "absurd size"),
        (f"C:{GOOD_C}\nP:zero\nV:1-r0\nS:0\n", "S", "absurd size"),
        ("C:Q1short=\nP:badsum\nV:1-r0\nS:10\n", "C", "Q1"),
        (f"C:{GOOD_C}\nP:dup\nV:1-r0\nS:10\n\nC:{GOOD_C}\nP:dup\nV:1-r0\nS:10\n", "P", "twice"),
    ],
)
def test_hostile_entries_are_refused_with_the_field(
    tmp_path: Path, signing_key: SigningKey, entry: str, field: str, reason: str
) -> None:
    blob = _index_with_text(signing_key, entry + "\n")
    with pytest.raises(UnsafeIndexError) as caught:
        read(blob, Keyring.load(_keys(tmp_path, signing_key)))
    assert caught.value.field == field
    assert reason in str(caught.value)


def test_an_index_of_another_arch_is_refused_at_its_first_entry(alpine_keys: Keyring) -> None:
    name, count, _, _ = REAL[1]  # Alpine's own v3.17 main aarch64
    index = opened((FIXTURES / name).read_bytes(), alpine_keys)
    assert sum(1 for _ in index.entries("aarch64")) == count
    with pytest.raises(UnsafeIndexError) as caught:
        next(index.entries("x86_64"))
    assert caught.value.field == "A" and caught.value.value == "aarch64"
    assert "a package for another arch in the index of x86_64" in str(caught.value)


def test_noarch_and_entries_without_an_arch_belong_to_every_index(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    text = (
        f"C:{GOOD_C}\nP:any\nV:1-r0\nA:noarch\nS:10\n\n"
        f"C:{GOOD_C}\nP:old\nV:1-r0\nS:10\n\n"
        f"C:{GOOD_C}\nP:mine\nV:1-r0\nA:riscv64\nS:10\n\n"
    )
    index = opened(_index_with_text(signing_key, text), Keyring.load(_keys(tmp_path, signing_key)))
    assert [e.arch for e in index.entries("riscv64")] == ["noarch", None, "riscv64"]
    with pytest.raises(UnsafeIndexError, match="another arch in the index of x86"):
        list(index.entries("x86"))


def test_entries_are_read_one_at_a_time_and_each_is_checked_as_it_comes(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    text = f"C:{GOOD_C}\nP:dup\nV:1-r0\nS:10\n\nC:{GOOD_C}\nP:dup\nV:1-r0\nS:10\n\n"
    index = opened(_index_with_text(signing_key, text), Keyring.load(_keys(tmp_path, signing_key)))
    assert index.signer == signing_key.name
    entries = index.entries()
    first = next(entries)
    assert (first.filename, first.checksum, first.size) == ("dup-1-r0.apk", GOOD_C, 10)
    with pytest.raises(UnsafeIndexError, match=r"dup-1-r0\.apk is listed twice"):
        next(entries)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("P:nochecksum\nV:1\nS:3\n", "no C:"),
        (f"C:{GOOD_C}\nV:1\nS:3\n", "no P:"),
        (f"C:{GOOD_C}\nP:x\nS:3\n", "no V:"),
        (f"C:{GOOD_C}\nP:x\nV:1\n", "no S:"),
        ("garbage line without colon\n", "expected 'X:value'"),
    ],
)
def test_malformed_entries_are_refused(
    tmp_path: Path, signing_key: SigningKey, text: str, message: str
) -> None:
    with pytest.raises(IndexFormatError, match=message):
        read(_index_with_text(signing_key, text + "\n"), Keyring.load(_keys(tmp_path, signing_key)))


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path: Path, signing_key: SigningKey) -> None:
    # 64 MiB of zeros inside the APKINDEX member compress to ~64 KiB.
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        payload = b"\0" * (64 << 20)
        info = tarfile.TarInfo("APKINDEX")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    content = gzip.compress(tar.getvalue(), 9)
    assert len(content) < 1 << 20
    from mirrord.demo.repogen import signature_stream

    blob = signature_stream(signing_key, content) + content
    with pytest.raises(IndexFormatError, match="more than"):
        read(blob, Keyring.load(_keys(tmp_path, signing_key)), limit=8 << 20)


def test_garbage_and_truncation_are_format_errors(tmp_path: Path, signing_key: SigningKey) -> None:
    keyring = Keyring.load(_keys(tmp_path, signing_key))
    with pytest.raises(IndexFormatError, match="corrupt"):
        read(b"<html>not found</html>", keyring)
    good = build_index([build_package(PackageSpec("a", "1-r0"), signing_key)], signing_key)
    with pytest.raises(IndexFormatError, match="truncated"):
        read(good[:-10], keyring)
    with pytest.raises(IndexFormatError, match="empty"):
        read(b"", keyring)
    with pytest.raises(IndexFormatError):
        read(good + zlib.compress(b"x"), keyring)


def test_the_one_scan_for_safe_names_accepts_exactly_what_the_checks_accept() -> None:
    """Every code point: _PATH_TEXT matches it alone iff no check of _check_path_text
    (NUL, a separator, a control character, white space) would refuse it."""
    refused = [
        cp
        for cp in range(0x110000)
        if cp < 0x20 or cp == 0x7F or chr(cp) in "/\\" or chr(cp).isspace()
    ]
    assert [cp for cp in range(0x110000) if not _PATH_TEXT.fullmatch(chr(cp))] == refused
