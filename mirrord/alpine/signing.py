"""Trusted RSA keys and apk signature checks (``.SIGN.RSA.``, ``.RSA256.``, ``.RSA512.``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mirrord.alpine.signames import parse_signature_name as parse_signature_name
from mirrord.core.errors import ConfigError, SignatureError


@dataclass(frozen=True, slots=True)
class SignatureMember:
    """A ``.SIGN.*`` tar member: which key, which digest, the signature bytes."""

    key_name: str
    digest: str  # "sha1", "sha256" or "sha512"
    signature: bytes


def signature_hash(digest: str) -> hashes.HashAlgorithm:
    """The hash an apk signature member names: "sha512", "sha256", else SHA-1."""
    if digest == "sha512":
        return hashes.SHA512()
    if digest == "sha256":
        return hashes.SHA256()
    return hashes.SHA1()  # noqa: S303


class Keyring:
    """The trusted public keys, by file name as in ``/etc/apk/keys``."""

    def __init__(self, keys: dict[str, rsa.RSAPublicKey], directory: Path | None = None) -> None:
        self._keys = dict(keys)
        self.directory = directory

    @property
    def names(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def load(cls, directory: Path, *, required: bool = True) -> Keyring:
        """Read every ``*.pub`` file; a broken key or unreadable directory is a ConfigError."""
        try:
            candidates = sorted(p for p in directory.iterdir() if p.name.endswith(".pub"))
        except FileNotFoundError:
            if not required:
                return cls({}, directory)
            raise ConfigError("origin.keys", f"directory {directory} does not exist") from None
        except OSError as error:
            raise ConfigError(
                "origin.keys", f"cannot read directory {directory}: {error.strerror}"
            ) from None
        keys: dict[str, rsa.RSAPublicKey] = {}
        for path in candidates:
            try:
                pem = path.read_bytes()
            except OSError as error:
                raise ConfigError("origin.keys", f"cannot read {path}: {error.strerror}") from None
            try:
                key = serialization.load_pem_public_key(pem)
            except ValueError:
                raise ConfigError("origin.keys", f"{path} is not a PEM public key") from None
            if not isinstance(key, rsa.RSAPublicKey):
                raise ConfigError("origin.keys", f"{path} is not an RSA public key")
            keys[path.name] = key
        if required and not keys:
            raise ConfigError(
                "origin.keys",
                f"no *.rsa.pub keys in {directory} (set allow_untrusted for unsigned repos)",
            )
        return cls(keys, directory)

    def __contains__(self, key_name: str) -> bool:
        return key_name in self._keys

    def verify(self, member: SignatureMember, signed: bytes) -> None:
        """Raise SignatureError unless ``signed`` carries a valid signature by a trusted key."""
        key = self._keys.get(member.key_name)
        if key is None:
            where = f" in {self.directory}" if self.directory else ""
            raise SignatureError(member.key_name, f"not a trusted key{where}")
        algorithm = signature_hash(member.digest)
        try:
            key.verify(member.signature, signed, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SignatureError(
                member.key_name,
                f"RSA/{member.digest} signature does not match the signed bytes "
                "(tampered or corrupt)",
            ) from None
