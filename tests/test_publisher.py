"""The index goes live as a hard link to the stored one, with the origin's mtime."""

from __future__ import annotations

import os
from pathlib import Path

from mirrord.core.model import ArchKey
from mirrord.publish.publisher import INDEX_NAME, Publisher
from mirrord.storage.store import ContentStore

MAIN = ArchKey("v3.20", "main", "x86_64")
TESTING = ArchKey("edge", "testing", "riscv64")
ORIGIN_MTIME = 1_764_000_000.0


def publisher(tmp_path: Path) -> Publisher:
    store = ContentStore(tmp_path / "storage")
    store.prepare()
    tree = Publisher(tmp_path / "published", store)
    for key in (MAIN, TESTING):
        tree.ensure_dir(tree.arch_dir(key))
    return tree


def test_the_stored_index_is_linked_in_not_copied(tmp_path: Path) -> None:
    tree = publisher(tmp_path)
    old = tree.store.put_bytes(b"old index")
    new = tree.store.put_bytes(b"new index")
    tree.go_live(MAIN, old, ORIGIN_MTIME - 60)
    tree.go_live(MAIN, new, ORIGIN_MTIME)
    live = tree.arch_dir(MAIN) / INDEX_NAME
    assert live.read_bytes() == b"new index"
    assert os.path.samefile(live, tree.store.object_file(new))
    assert live.stat().st_mtime == ORIGIN_MTIME
    assert sorted(os.listdir(tree.arch_dir(MAIN))) == [INDEX_NAME]  # no temporary name left


def test_an_index_live_for_another_arch_is_copied_so_each_keeps_its_own_mtime(
    tmp_path: Path,
) -> None:
    tree = publisher(tmp_path)
    same = tree.store.put_bytes(b"an empty repository's index")
    tree.go_live(MAIN, same, ORIGIN_MTIME)
    tree.go_live(TESTING, same, ORIGIN_MTIME + 3600)
    main, testing = (tree.arch_dir(key) / INDEX_NAME for key in (MAIN, TESTING))
    assert main.read_bytes() == testing.read_bytes() == b"an empty repository's index"
    assert not os.path.samefile(main, testing)
    assert (main.stat().st_mtime, testing.stat().st_mtime) == (ORIGIN_MTIME, ORIGIN_MTIME + 3600)


def test_index_is_a_stat_for_the_linked_index_and_a_hash_otherwise(tmp_path: Path) -> None:
    tree = publisher(tmp_path)
    same = tree.store.put_bytes(b"an empty repository's index")
    tree.go_live(MAIN, same, ORIGIN_MTIME)
    tree.go_live(TESTING, same, ORIGIN_MTIME)  # a copy
    read: list[ArchKey] = []
    index_bytes = tree.index_bytes

    def counted(key: ArchKey) -> bytes | None:
        read.append(key)
        return index_bytes(key)

    tree.index_bytes = counted  # type: ignore[method-assign]
    assert tree.index_is(MAIN, same) and read == []  # the stored object itself: no read
    assert tree.index_is(TESTING, same) and read == [TESTING]
    other = tree.store.put_bytes(b"another index")
    assert not tree.index_is(MAIN, other)
    live = tree.arch_dir(MAIN) / INDEX_NAME
    live.unlink()  # replaced behind mirrord's back by the same bytes: hashed, still ours
    live.write_bytes(b"an empty repository's index")
    assert tree.index_is(MAIN, same)
    live.write_bytes(b"something else")
    assert not tree.index_is(MAIN, same)
    live.unlink()
    assert not tree.index_is(MAIN, same)
