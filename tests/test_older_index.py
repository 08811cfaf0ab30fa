"""An origin serving an older index than the one published: refused until forced, no lag.

A load balancer's lagging backend, a stale cache or a restore from backup
serves an index whose Last-Modified is older than what the mirror publishes.
Its signature is as valid as ever, so only the dates tell.
"""

from __future__ import annotations

import email.utils
import os
import time

import pytest

from mirrord.core.clock import FakeClock
from mirrord.core.errors import ConfigError
from mirrord.core.metrics import Metrics
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from mirrord.publish.generations import CLOCK_AHEAD, goes_back
from mirrord.sync.status import Outcome
from tests.daemon_harness import ctl, daemon_config, human_ctl, running_daemon, synced
from tests.helpers import Mirror, check_published
from tests.prom import samples, scrape, value

KEY = ArchKey("v3.20", "main", "x86_64")
LABELS = {"branch": "v3.20", "repo": "main", "arch": "x86_64"}


def serve_index(mirror: Mirror, index: bytes, mtime: float) -> None:
    """The origin's index becomes these bytes with this Last-Modified."""
    path = mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz"
    path.write_bytes(index)
    os.utime(path, (mtime, mtime))


def two_generations(mirror: Mirror) -> tuple[bytes, bytes, float]:
    """The origin at generation 1, then 2 (generation 1's packages kept, as a lagging
    server still has them); returns both indexes and generation 2's Last-Modified."""
    first = simple_specs("pkg", 10, payload=3000)
    old_index = mirror.tree.put(KEY, first)
    new_index = mirror.tree.put(KEY, [s.bumped() for s in first], keep_files=True)
    return old_index, new_index, (mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz").stat().st_mtime


def test_goes_back_only_by_dates_that_order() -> None:
    assert goes_back(100.0, 200.0, 200.0)
    assert not goes_back(200.0, 200.0, 200.0)  # the same second: cannot tell
    assert not goes_back(300.0, 200.0, 200.0)
    assert not goes_back(None, 200.0, 200.0)
    assert not goes_back(100.0, None, 200.0)
    assert goes_back(100.0, 200.0, None)
    # The published index was dated ahead of our clock: its origin's clock was wrong.
    assert goes_back(100.0, 200.0 + CLOCK_AHEAD, 200.0)
    assert not goes_back(100.0, 200.0 + CLOCK_AHEAD + 1, 200.0)


async def test_an_older_index_is_refused_and_forced_once(mirror: Mirror) -> None:
    old_index, new_index, new_mtime = two_generations(mirror)
    config = mirror.config(KEY)
    metrics = Metrics()
    (result,) = await mirror.sync(config, metrics=metrics)
    assert result.outcome is Outcome.PUBLISHED and result.fetched == 10
    published = config.publish.path.joinpath(*KEY.parts) / "APKINDEX.tar.gz"
    assert published.read_bytes() == new_index

    old_mtime = new_mtime - 3600
    serve_index(mirror, old_index, old_mtime)
    requests = len(mirror.origin.requests)
    (result,) = await mirror.sync(config, metrics=metrics)

    assert result.outcome is Outcome.REFUSED
    assert result.error is not None
    assert "the origin serves an older index (Last-Modified " in result.error
    assert email.utils.formatdate(old_mtime, usegmt=True) in result.error
    assert email.utils.formatdate(new_mtime, usegmt=True) in result.error
    assert f"'mirrord sync --force {KEY}'" in result.error
    assert [r.path for r in mirror.origin.requests[requests:]] == [
        f"/{KEY}/APKINDEX.tar.gz"
    ]  # nothing else was fetched
    assert published.read_bytes() == new_index
    assert published.stat().st_mtime == new_mtime
    report = check_published(config)
    assert report.ok and report.files == 10
    assert metrics.older_index_refusals.labels(**LABELS)._value.get() == 1
    assert metrics.arch_failing.labels(**LABELS)._value.get() == 1

    # The operator decides the origin really went back: forced once, it is published
    # with its own date, and what the newer index listed stays for the grace period.
    (result,) = await mirror.sync(config, force=frozenset({KEY}))
    assert result.outcome is Outcome.PUBLISHED and result.fetched == 10  # generation 1's
    assert published.read_bytes() == old_index
    assert published.stat().st_mtime == old_mtime
    assert check_published(config).ok
    bumped = [s.bumped().filename for s in simple_specs("pkg", 10, payload=3000)]
    assert all((published.parent / name).exists() for name in bumped)
    # From now on it is the baseline: the same index again is no refusal.
    (result,) = await mirror.sync(config, metrics=metrics)
    assert result.outcome is Outcome.UNCHANGED
    assert metrics.older_index_refusals.labels(**LABELS)._value.get() == 1


async def test_the_published_bytes_under_an_older_date_still_repair_the_tree(
    mirror: Mirror,
) -> None:
    index = mirror.tree.put(KEY, simple_specs("pkg", 6, payload=3000))
    mtime = (mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz").stat().st_mtime
    config = mirror.config(KEY)
    assert (await mirror.sync(config))[0].outcome is Outcome.PUBLISHED
    published = config.publish.path.joinpath(*KEY.parts) / "APKINDEX.tar.gz"
    published.unlink()  # replaced, not written through: it is a hard link to the store
    published.write_bytes(b"damaged behind mirrord's back")
    serve_index(mirror, index, mtime - 3600)  # the same bytes, restored with an older date

    (result,) = await mirror.sync(config)

    assert result.outcome is Outcome.PUBLISHED, result.error
    assert published.read_bytes() == index
    assert check_published(config).ok


async def test_an_origin_clock_that_ran_ahead_orders_nothing(mirror: Mirror) -> None:
    old_index, new_index, _ = two_generations(mirror)
    now = time.time()
    serve_index(mirror, old_index, now + 86400)  # written while the origin's clock ran a day ahead
    config = mirror.config(KEY)
    clock = FakeClock(start=now)
    assert (await mirror.sync(config, clock=clock))[0].outcome is Outcome.PUBLISHED

    serve_index(mirror, new_index, now + 60)  # the clock put right: a newer index, dated earlier
    clock.advance(60)
    (result,) = await mirror.sync(config, clock=clock)

    assert result.outcome is Outcome.PUBLISHED, result.error
    published = config.publish.path.joinpath(*KEY.parts) / "APKINDEX.tar.gz"
    assert published.read_bytes() == new_index


async def test_older_index_publish_follows_an_origin_back(mirror: Mirror) -> None:
    old_index, _, new_mtime = two_generations(mirror)
    config = mirror.config(KEY, publish={"older_index": "publish"})
    assert (await mirror.sync(config))[0].outcome is Outcome.PUBLISHED
    serve_index(mirror, old_index, new_mtime - 3600)

    (result,) = await mirror.sync(config)

    assert result.outcome is Outcome.PUBLISHED, result.error
    published = config.publish.path.joinpath(*KEY.parts) / "APKINDEX.tar.gz"
    assert published.read_bytes() == old_index


@pytest.mark.parametrize("given", ["yes", 1])
def test_older_index_takes_refuse_or_publish(mirror: Mirror, given: object) -> None:
    with pytest.raises(ConfigError, match=r"publish\.older_index"):
        mirror.config(KEY, publish={"older_index": given})


async def test_the_daemon_serves_on_without_lag_and_says_why(mirror: Mirror) -> None:
    old_index, new_index, new_mtime = two_generations(mirror)
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        listen = daemon.config.metrics.listen
        serve_index(mirror, old_index, new_mtime - 3600)
        await ctl(daemon, "sync")
        await synced(daemon, 2)

        found = samples(await scrape(f"http://{listen}"))
        assert value(found, "mirrord_older_index_refusals_total", **LABELS) == 1
        assert value(found, "mirrord_arch_failing", **LABELS) == 1
        # The mirror is not behind an index older than its own.
        assert value(found, "mirrord_mirror_lag_seconds", **LABELS) == 0
        (row,) = (await ctl(daemon, "status"))["arches"]
        assert row["last_outcome"] == "refused" and row["lag"] == 0
        assert "older index" in row["last_error"]
        shown = await human_ctl(daemon, "status")
        assert "refused: refusing to publish: the origin serves an older index" in shown
        # The table cuts it; under it, whole, with what to do.
        assert f"\n{KEY}: refused: refusing to publish: the origin serves an older index" in shown
        assert f"'mirrord ctl publish --force {KEY}'" in shown

        # The lagging server catches up: the newer index again, and all is well.
        serve_index(mirror, new_index, new_mtime)
        await ctl(daemon, "sync")
        await synced(daemon, 3)
        found = samples(await scrape(f"http://{listen}"))
        assert value(found, "mirrord_arch_failing", **LABELS) == 0
        assert value(found, "mirrord_mirror_lag_seconds", **LABELS) == 0
        (row,) = (await ctl(daemon, "status"))["arches"]
        assert row["last_outcome"] == "unchanged"
        index = daemon.config.publish.path.joinpath(*KEY.parts) / "APKINDEX.tar.gz"
        assert index.read_bytes() == new_index

        # The origin really went back: the operator publishes it once, by hand.
        serve_index(mirror, old_index, new_mtime - 3600)
        await ctl(daemon, "sync")
        await synced(daemon, 4)
        assert index.read_bytes() == new_index
        await ctl(daemon, "publish", arch=str(KEY), force=True)
        await synced(daemon, 5)
        assert index.read_bytes() == old_index
        (row,) = (await ctl(daemon, "status"))["arches"]
        assert row["last_outcome"] == "published" and row["lag"] == 0
