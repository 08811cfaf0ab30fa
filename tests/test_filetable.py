"""The columnar file list reads back exactly the records written into it."""

from __future__ import annotations

import hashlib
from array import array

import pytest

from mirrord.core.model import PublishedFile
from mirrord.core.objectkey import package_key
from mirrord.storage.filetable import FileTable, Selection

APK_KEY = package_key(1234, hashlib.sha256(b"head").digest(), hashlib.sha256(b"data").digest())
PLAIN_KEY = hashlib.sha256(b"whole file").hexdigest()

FILES = [
    PublishedFile("musl-1.2.5-r0.apk", APK_KEY, 1234, "musl"),
    PublishedFile("zlib-1.3.1-r1.apk", PLAIN_KEY, 2**40, "zlib"),
    PublishedFile("busybox-1.36-r0.apk", "", 0, "busybox"),  # pending
    PublishedFile("odd-name.apk", "not-a-key", 7, "other"),  # name not a prefix, digest no key
    PublishedFile("empty-1-r0.apk", APK_KEY, 9, ""),
    PublishedFile("café-1-r0.apk", PLAIN_KEY, 3, "café"),  # names are UTF-8
]


def test_records_read_back_as_written() -> None:
    table = FileTable(FILES)
    assert len(table) == len(FILES)
    assert list(table) == FILES
    assert table[-1] == FILES[-1] and table[1:3] == FILES[1:3]
    assert table.bytes == sum(f.size for f in FILES)
    assert list(table.digests()) == [APK_KEY, PLAIN_KEY, "not-a-key", APK_KEY, PLAIN_KEY]
    with pytest.raises(IndexError):
        table[len(FILES)]


def test_a_digest_can_be_set_and_set_again() -> None:
    table = FileTable(FILES)
    table.set_digest(2, PLAIN_KEY)
    assert table[2] == PublishedFile("busybox-1.36-r0.apk", PLAIN_KEY, 0, "busybox")
    table.set_digest(3, APK_KEY)
    table.set_digest(0, "")
    assert [f.sha256 for f in table] == ["", PLAIN_KEY, PLAIN_KEY, APK_KEY, APK_KEY, PLAIN_KEY]
    assert table[5].package == "café"
    assert table[3].package == "other"


def test_a_selection_reads_the_chosen_files_in_its_order() -> None:
    table = FileTable(FILES)
    chosen = Selection(table, array("I", [3, 0]))
    assert len(chosen) == 2 and list(chosen) == [FILES[3], FILES[0]]
    assert chosen[1] == FILES[0] and chosen[-1] == FILES[0] and chosen[:1] == [FILES[3]]
    table.set_digest(0, "")
    assert chosen[1].sha256 == ""


def test_whole_columns_read_as_the_records_do() -> None:
    table = FileTable(FILES)
    again = FileTable.decode(table.encode())
    assert list(again) == FILES and FileTable.is_record(table.encode())
    assert again.names() == [f.filename for f in FILES]
    assert again.package_names() == {f.package for f in FILES}
    same = [again.same_digest(i, table, i) for i in range(len(FILES))]
    assert same == [True] * len(FILES)
    table.set_digest(0, PLAIN_KEY)  # the same 32 bytes under another kind would not be equal
    assert not again.same_digest(0, table, 0) and not again.same_digest(1, table, 3)
