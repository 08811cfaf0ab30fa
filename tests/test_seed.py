"""Seeding the store from the published tree: verified files join the store, not downloaded."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from mirrord.alpine.apkpackage import digest_bytes
from mirrord.core.clock import FakeClock
from mirrord.core.errors import ShuttingDownError
from mirrord.core.logs import make_logger
from mirrord.core.model import PackageRef
from mirrord.fetch.seed import seed_from_tree
from mirrord.storage.committer import Committer
from mirrord.storage.statedb import StateDB
from mirrord.storage.store import ContentStore
from tests.helpers import FIXTURES

APK = "alpine-baselayout-3.2.0-r23.aarch64.apk"


def _setup(tmp_path: Path) -> tuple[Path, PackageRef, ContentStore, StateDB]:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copyfile(FIXTURES / APK, tree / APK)
    digest = digest_bytes(APK, (tree / APK).read_bytes())
    store = ContentStore(tmp_path / "storage")
    store.prepare()
    db = StateDB.open(tmp_path / "storage" / "state.db")
    return tree, PackageRef(APK, digest.checksum, digest.size), store, db


async def test_a_verified_file_of_the_tree_is_stored_and_recorded(tmp_path: Path) -> None:
    tree, ref, store, db = _setup(tmp_path)
    committer = Committer(store, db, FakeClock(), make_logger("error", "json"))
    async with asyncio.TaskGroup() as group:
        group.create_task(committer.run())
        seeded = await seed_from_tree(tree, [ref], store, committer)
        committer.close()
    (key,) = seeded.values()
    assert list(seeded) == [ref.identity]
    assert store.object_path(key).read_bytes() == (FIXTURES / APK).read_bytes()
    db.close()


async def test_a_stopped_committer_is_a_shutdown_not_a_group_of_errors(tmp_path: Path) -> None:
    """The engine tells an interrupted arch from a failed one by the error's kind."""
    tree, ref, store, db = _setup(tmp_path)
    committer = Committer(store, db, FakeClock(), make_logger("error", "json"))
    committer.close()
    with pytest.raises(ShuttingDownError):
        await seed_from_tree(tree, [ref], store, committer)
    db.close()
