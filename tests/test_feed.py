"""The publish feed: every publish and rollback is announced once its index is live."""

from __future__ import annotations

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.sync.feed import Published, PublishFeed
from mirrord.sync.runtime import open_runtime
from tests.helpers import Mirror

KEYS = [ArchKey("v3.20", "main", "x86_64"), ArchKey("v3.20", "main", "aarch64")]


def test_a_full_subscriber_loses_its_oldest_events_and_never_blocks() -> None:
    feed = PublishFeed(backlog=2)
    slow = feed.subscribe("slow")
    for n in range(5):
        feed.announce(Published(f"d{n}", (f"d{n}/APKINDEX.tar.gz",), float(n)))
    assert slow.dropped == 3
    assert [slow.queue.get_nowait().directory for _ in range(2)] == ["d3", "d4"]


async def test_publishes_and_rollbacks_are_announced_after_the_index_is_live(
    mirror: Mirror,
) -> None:
    for n, key in enumerate(KEYS):
        mirror.tree.put(key, simple_specs(key.arch, 3, arch=key.arch, seed=n))
    config = mirror.config(*KEYS)
    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        events = runtime.feed.subscribe("test")
        await runtime.engine.run_pass()
        first = sorted([events.queue.get_nowait(), events.queue.get_nowait()], key=str)
        assert events.queue.empty()
        assert sorted(e.directory for e in first) == sorted(str(k) for k in KEYS)
        for event in first:
            (path,) = event.changed
            assert path == f"{event.directory}/APKINDEX.tar.gz"
            assert config.publish.path.joinpath(path).is_file()

        key = KEYS[0]
        mirror.tree.put(key, simple_specs(key.arch, 4, arch=key.arch, seed=0))
        (second,) = await runtime.engine.run_pass([key])
        assert second.outcome == "published", second
        assert events.queue.get_nowait().directory == str(key)
        unchanged = await runtime.engine.run_pass([key])
        assert unchanged[0].outcome == "unchanged"
        assert events.queue.empty()

        first_snapshot = (await runtime.db.call(runtime.db.snapshots, str(key)))[-1]
        await runtime.engine.publication.rollback(key, first_snapshot.id)
        rolled_back = events.queue.get_nowait()
        assert rolled_back.directory == str(key)
