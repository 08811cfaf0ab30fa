"""Object keys: the string every record uses to name a stored object, and its kind.

Two kinds, each in its own namespace of the store, so no file of one kind
can ever take the name of an object of the other:

* ``<64 hex>``: the SHA-256 of the whole file, in ``objects/sha256/<ab>/``.
  Indexes, releases files, and every package a store held before package
  keys existed (those records keep resolving, nothing is migrated).
* ``apk:<64 hex>``: a package key, in ``objects/apk/<ab>/``. The SHA-256 of a
  tag, the size, the SHA-256 of the head (signature and control streams) and
  the SHA-256 of the data stream, the digest ``datahash`` vouches for. The
  verification computes the data digest anyway, so each package byte is
  hashed with SHA-256 once. Anybody can write a file whose whole-file SHA-256
  equals such a key (the preimage is 112 public bytes): that is why the key
  lives in a namespace only the package digester may name. Every package
  the digester can parse gets one, with or without a declared ``datahash``
  (the data stream's SHA-256 is computed either way).
"""

from __future__ import annotations

import hashlib
import re

from mirrord.core.errors import StoreError

PACKAGE_PREFIX = "apk:"
# Key prefix -> directory under ``objects/``.
KIND_DIRECTORIES = {"": "sha256", PACKAGE_PREFIX: "apk"}
FAN_OUT = tuple(f"{first:02x}" for first in range(256))  # <kind>/<first two hex digits>/
# Every (kind, fan-out directory) as a key prefix: "ab" and "apk:ab". A range
# of keys in the database and one directory on disk each.
SHARDS = tuple(prefix + fan for prefix in KIND_DIRECTORIES for fan in FAN_OUT)

_KEY = re.compile(r"^(apk:)?([0-9a-f]{64})$")
_PACKAGE_TAG = b"mirrord package key 1\0"


def split_key(key: str) -> tuple[str, str]:
    """(directory under ``objects/``, hex file name) of a key; StoreError if it is none."""
    match = _KEY.match(key)
    if match is None:
        raise StoreError(key, "not an object key")
    return KIND_DIRECTORIES[match.group(1) or ""], match.group(2)


def is_key(text: str) -> bool:
    return _KEY.match(text) is not None


def is_package_key(key: str) -> bool:
    return key.startswith(PACKAGE_PREFIX)


def package_key(size: int, head_sha256: bytes, data_sha256: bytes) -> str:
    """The key of a package whose head and data streams have these SHA-256 digests."""
    preimage = package_key_preimage(size, head_sha256, data_sha256)
    return PACKAGE_PREFIX + hashlib.sha256(preimage).hexdigest()


def package_key_preimage(size: int, head_sha256: bytes, data_sha256: bytes) -> bytes:
    """The bytes whose plain SHA-256 is a package key's hex (for the collision tests)."""
    return _PACKAGE_TAG + size.to_bytes(8, "big") + head_sha256 + data_sha256
