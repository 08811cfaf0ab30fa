"""Blocking file primitives: reading a file back to hash it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mirrord.storage.durable import READ_BLOCK, hash_file


def test_hash_file_feeds_every_byte_in_blocks_to_every_hash(tmp_path: Path) -> None:
    data = bytes(range(256)) * (READ_BLOCK * 5 // 2 // 256)  # two and a half blocks
    path = tmp_path / "object"
    path.write_bytes(data)
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    blocks: list[int] = []

    size = hash_file(path, sha256.update, sha1.update, lambda block: blocks.append(len(block)))

    assert size == len(data)
    assert sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sha1.hexdigest() == hashlib.sha1(data).hexdigest()
    assert blocks == [READ_BLOCK, READ_BLOCK, READ_BLOCK // 2]


def test_hash_file_of_an_empty_file_feeds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    fed: list[bytes] = []
    assert hash_file(path, fed.append) == 0
    assert fed == []


def test_hash_file_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "gone", hashlib.sha256().update)
