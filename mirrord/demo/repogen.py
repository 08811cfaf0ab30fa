"""A generator of real-format, signed Alpine repositories (apk v2 packages + APKINDEX).

Used by ``mirrord demo``, the test suite and the benchmarks. The output is what
abuild and ``apk index`` produce: packages made of three gzip streams
(signature tar, cut control tar with ``.PKGINFO`` and ``datahash``, data tar)
and an index made of a signature stream plus a tar of DESCRIPTION and APKINDEX.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mirrord.alpine.apkpackage import q1
from mirrord.alpine.signing import signature_hash
from mirrord.alpine.tarlite import END_OF_ARCHIVE, build_member
from mirrord.core.model import ArchKey


@dataclass(frozen=True)
class SigningKey:
    name: str  # the public key's file name, e.g. "mirrord-demo-1a2b3c4d.rsa.pub"
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, label: str = "mirrord-test", bits: int = 2048) -> SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        tag = hashlib.sha256(
            private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()[:8]
        return cls(f"{label}-{tag}.rsa.pub", private)

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_private_pem(cls, name: str, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return cls(name, key)

    def write_public(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.name
        path.write_bytes(self.public_pem())
        return path

    def sign(self, data: bytes, digest: str = "sha1") -> bytes:
        return self.private.sign(data, padding.PKCS1v15(), signature_hash(digest))


def _gzip(data: bytes, level: int = 6) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_STORED_MAX = 0xFFFF


def stored_gzip(data: bytes) -> bytes:
    """A gzip member of stored (uncompressed) deflate blocks, built by hand.

    Any gzip reader accepts it; for tiny members it costs a hundredth of
    ``zlib.compressobj``, whose set-up dominates (the scale benchmark builds
    millions of packages).
    """
    blocks = [_GZIP_HEADER]
    for start in range(0, max(len(data), 1), _STORED_MAX):
        chunk = data[start : start + _STORED_MAX]
        final = 1 if start + _STORED_MAX >= len(data) else 0
        size = len(chunk)
        blocks += [struct.pack("<BHH", final, size, size ^ 0xFFFF), chunk]
    blocks.append(struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF))
    return b"".join(blocks)


def signature_stream(key: SigningKey, signed: bytes, digest: str = "sha1") -> bytes:
    kind = {"sha512": "RSA512", "sha256": "RSA256"}.get(digest, "RSA")
    member = build_member(f".SIGN.{kind}.{key.name}", key.sign(signed, digest))
    return _gzip(member, 9)  # cut: no end-of-archive blocks, as abuild-sign writes it


def _payload(seed: int, size: int) -> bytes:
    block = hashlib.shake_128(seed.to_bytes(8, "little")).digest(min(size, 1 << 20))
    if size <= len(block):
        return block
    return (block * (size // len(block) + 1))[:size]


@dataclass(frozen=True)
class PackageSpec:
    """One package to build. ``payload`` is the size of its single data file."""

    name: str
    version: str
    arch: str = "x86_64"
    payload: int = 2048
    seed: int = 0
    legacy: bool = False  # no datahash: C: covers control + data (old abuild)
    depends: tuple[str, ...] = ()
    origin: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.apk"

    def bumped(self) -> PackageSpec:
        """The same package rebuilt: pkgrel + 1 and different content."""
        base, sep, rel = self.version.rpartition("-r")
        version = f"{base}-r{int(rel) + 1}" if sep and rel.isdigit() else f"{self.version}-r1"
        return replace(self, version=version, seed=self.seed + 1_000_003)


@dataclass(frozen=True)
class BuiltPackage:
    spec: PackageSpec
    data: bytes  # the whole .apk file
    checksum: str  # the C: field
    installed_size: int


def data_stream(spec: PackageSpec, *, stored: bool = False) -> bytes:
    member = build_member(f"usr/share/{spec.name}/payload.bin", _payload(spec.seed, spec.payload))
    if stored:
        return stored_gzip(member + END_OF_ARCHIVE)
    return _gzip(member + END_OF_ARCHIVE, 0 if spec.payload > 4096 else 6)


def control_stream(
    spec: PackageSpec, data_gz: bytes, installed_size: int, *, stored: bool = False
) -> bytes:
    lines = [
        "# Generated by mirrord's repository generator",
        f"pkgname = {spec.name}",
        f"pkgver = {spec.version}",
        f"pkgdesc = Generated package {spec.name}",
        "url = https://example.invalid/",
        "builddate = 1700000000",
        f"size = {installed_size}",
        f"arch = {spec.arch}",
        f"origin = {spec.origin or spec.name}",
        "license = MIT",
        *(f"depend = {dep}" for dep in spec.depends),
    ]
    if not spec.legacy:
        lines.append(f"datahash = {hashlib.sha256(data_gz).hexdigest()}")
    pkginfo = ("\n".join(lines) + "\n").encode()
    member = build_member(".PKGINFO", pkginfo)  # cut, like abuild
    return stored_gzip(member) if stored else _gzip(member, 9)


def build_package(
    spec: PackageSpec,
    key: SigningKey | None,
    *,
    signature_digest: str = "sha1",
    stored: bool = False,
) -> BuiltPackage:
    """``stored``: gzip streams without compression (``stored_gzip``), for bulk generation."""
    installed = (spec.payload + 4095) // 4096 * 4096
    data_gz = data_stream(spec, stored=stored)
    control_gz = control_stream(spec, data_gz, installed, stored=stored)
    signature = signature_stream(key, control_gz, signature_digest) if key else b""
    identity = hashlib.sha1(control_gz)  # noqa: S324 - apk's C: is SHA-1
    if spec.legacy:
        identity.update(data_gz)
    return BuiltPackage(spec, signature + control_gz + data_gz, q1(identity.digest()), installed)


def index_text(packages: Iterable[BuiltPackage]) -> str:
    blocks: list[str] = []
    for package in packages:
        spec = package.spec
        lines = [
            f"C:{package.checksum}",
            f"P:{spec.name}",
            f"V:{spec.version}",
            f"A:{spec.arch}",
            f"S:{len(package.data)}",
            f"I:{package.installed_size}",
            f"T:Generated package {spec.name}",
            "U:https://example.invalid/",
            "L:MIT",
            f"o:{spec.origin or spec.name}",
            "t:1700000000",
        ]
        if spec.depends:
            lines.append("D:" + " ".join(spec.depends))
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks) + "\n"


def build_index(
    packages: Sequence[BuiltPackage],
    key: SigningKey | None,
    *,
    description: str = "mirrord generated repository",
    signature_digest: str = "sha1",
    text: str | None = None,
) -> bytes:
    """An APKINDEX.tar.gz: signature stream + gzip(tar(DESCRIPTION, APKINDEX))."""
    body = (text if text is not None else index_text(packages)).encode()
    tar = (
        build_member("DESCRIPTION", description.encode())
        + build_member("APKINDEX", body)
        + END_OF_ARCHIVE
    )
    content = _gzip(tar, 6)
    if key is None:
        return content
    return signature_stream(key, content, signature_digest) + content


@dataclass
class OriginTree:
    """A directory laid out like an Alpine origin, rewritten as a test changes it."""

    root: Path
    key: SigningKey | None
    signature_digest: str = "sha1"
    _cache: dict[PackageSpec, BuiltPackage] = field(default_factory=dict)
    _contents: dict[ArchKey, list[PackageSpec]] = field(default_factory=dict)
    _index_mtime: float = 0.0

    def built(self, spec: PackageSpec) -> BuiltPackage:
        package = self._cache.get(spec)
        if package is None:
            package = build_package(spec, self.key, signature_digest=self.signature_digest)
            self._cache[spec] = package
        return package

    def arch_dir(self, key: ArchKey) -> Path:
        return self.root.joinpath(*key.parts)

    def contents(self, key: ArchKey) -> list[PackageSpec]:
        return list(self._contents.get(key, []))

    def packages(self, key: ArchKey) -> list[BuiltPackage]:
        return [self.built(spec) for spec in self._contents.get(key, [])]

    def put(
        self,
        key: ArchKey,
        specs: Sequence[PackageSpec],
        *,
        description: str | None = None,
        keep_files: bool = False,
    ) -> bytes:
        """Write the packages, then the index listing exactly them; drop unlisted files."""
        directory = self.arch_dir(key)
        directory.mkdir(parents=True, exist_ok=True)
        built = [self.built(spec) for spec in specs]
        for package in built:
            path = directory / package.spec.filename
            if not path.exists() or path.read_bytes() != package.data:
                path.write_bytes(package.data)
        index = build_index(
            built,
            self.key,
            description=description or f"{key} generated",
            signature_digest=self.signature_digest,
        )
        self.write_index(key, index)
        self._contents[key] = list(specs)
        if not keep_files:
            listed = {p.spec.filename for p in built}
            for path in directory.glob("*.apk"):
                if path.name not in listed:
                    path.unlink()
        return index

    def write_index(self, key: ArchKey, index: bytes) -> Path:
        """Replace the index, with an mtime strictly later (whole seconds) than the last one."""
        directory = self.arch_dir(key)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "APKINDEX.tar.gz"
        temp = directory / ".APKINDEX.tar.gz.new"
        temp.write_bytes(index)
        mtime = max(float(int(time.time())), self._index_mtime + 1.0)
        self._index_mtime = mtime
        os.utime(temp, (mtime, mtime))
        temp.replace(path)
        return path


def simple_specs(
    prefix: str, count: int, *, arch: str = "x86_64", payload: int = 2048, seed: int = 0
) -> list[PackageSpec]:
    """``count`` small packages named ``<prefix>-NNNN``, payloads varying around ``payload``."""
    return [
        PackageSpec(
            name=f"{prefix}-{i:04d}",
            version=f"1.{i % 7}.{i % 3}-r0",
            arch=arch,
            payload=payload + (i * 37) % max(payload, 1),
            seed=seed * 1_000_000 + i,
        )
        for i in range(count)
    ]
