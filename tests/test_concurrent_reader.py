"""Invariant 1 under load: a reader never sees an index pointing at a missing or wrong file."""

from __future__ import annotations

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from tests.helpers import Mirror
from tests.reader import publish_while_reading

KEY = ArchKey("edge", "main", "x86_64")
PUBLISHES = 25


async def test_reader_never_sees_a_missing_or_wrong_file_across_publishes(mirror: Mirror) -> None:
    specs = simple_specs("pkg", 40, payload=2500)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY)
    root = config.publish.path

    def fetch(relative: str) -> bytes | None:
        try:
            return (root / relative).read_bytes()
        except FileNotFoundError:
            return None

    stats = await publish_while_reading(mirror, config, KEY, specs, fetch, PUBLISHES)

    assert stats.problems == []
    assert len(stats.indexes_seen) == PUBLISHES
    assert stats.files_checked >= PUBLISHES * 40
