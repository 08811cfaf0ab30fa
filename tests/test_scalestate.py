"""The scale benchmark's generated state is what a finished sync leaves: a tree an apk
client accepts, every object recorded, and exactly the planted garbage for GC."""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.scalestate import GARBAGE_EVERY, all_arches, generate
from mirrord.alpine.signing import Keyring
from mirrord.demo.repogen import SigningKey
from mirrord.publish.treecheck import check_tree
from mirrord.storage.statedb import StateDB


def test_the_generated_state_verifies_and_plants_only_the_garbage(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    keys = all_arches()
    per = GARBAGE_EVERY  # one unlisted object per arch
    stored = generate(
        tmp_path / "storage",
        tmp_path / "published",
        tmp_path / "origin",
        signing_key,
        per * len(keys),
        now=time.time(),
    )
    assert len(keys) == 198 and stored == (per + 1) * len(keys)  # packages + one index each

    signing_key.write_public(tmp_path / "keys")
    report = check_tree(tmp_path / "published", keys, Keyring.load(tmp_path / "keys"))
    assert report.ok, report.problems[:3]
    assert report.files == (per - 1) * len(keys)

    on_disk = sum(len(os.listdir(d)) for d in (tmp_path / "storage/objects/sha256").iterdir())
    db = StateDB.open(tmp_path / "storage" / "state.db")
    try:
        assert db.object_stats()[0] == stored == on_disk
        assert all(db.current(str(key)) is not None for key in keys)
        garbage = db.garbage_candidates(time.time())
        assert (garbage.old, len(garbage.unlisted)) == (stored, len(keys))
    finally:
        db.close()
    origin = (tmp_path / "origin").joinpath(*keys[0].parts, "APKINDEX.tar.gz").read_bytes()
    published = (tmp_path / "published").joinpath(*keys[0].parts, "APKINDEX.tar.gz")
    assert origin == published.read_bytes()
