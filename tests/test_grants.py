"""Worker processes spend the daemon's tokens: Want, Grant, Limit and the received report."""

from __future__ import annotations

import asyncio

from mirrord.core.clock import FakeClock
from mirrord.fetch.grants import GrantedThrottle, grant, worker_limit
from mirrord.fetch.traffic import TokenBucket
from mirrord.fetch.wire import Grant, Limit, Message, Received, Want


def test_each_worker_gets_the_rate_the_burst_and_its_share_as_a_grant_size() -> None:
    bucket = TokenBucket(5e6, 4 << 20, FakeClock())
    assert worker_limit(bucket, 4) == Limit(rate=5e6, burst=4 << 20, chunk=512 << 10)
    assert worker_limit(bucket, 1).chunk == 1 << 20  # at most 1 MiB a request
    assert worker_limit(TokenBucket(None, 64 << 10, FakeClock()), 8).chunk == 16 << 10


async def test_a_grant_is_paid_out_of_the_bucket() -> None:
    bucket = TokenBucket(1e9, 1 << 20, FakeClock(autojump=True))
    assert await grant(bucket, Want(5, 300_000)) == Grant(5, 300_000)
    assert bucket.passed == 300_000


async def test_unlimited_downloads_ask_for_nothing_but_report_what_they_received() -> None:
    sent: list[Message] = []
    throttle = GrantedThrottle(sent.append)
    await throttle.consume(1000)
    throttle.set_limit(Limit(rate=None, burst=1 << 20, chunk=1 << 18))
    await throttle.consume(500)
    assert sent == []
    assert throttle.receive_buffer(4) is None
    throttle.flush_received()
    throttle.flush_received()
    assert sent == [Received(1500)]


async def test_limited_downloads_wait_for_a_grant_of_at_least_a_chunk() -> None:
    sent: list[Message] = []
    throttle = GrantedThrottle(sent.append)
    throttle.set_limit(Limit(rate=1e6, burst=1 << 20, chunk=1 << 16))
    assert throttle.receive_buffer(4) == (1 << 20) // 16

    first = asyncio.create_task(throttle.consume(1000))
    await asyncio.sleep(0)
    assert sent == [Want(1, 1 << 16)] and not first.done()
    throttle.granted(Grant(1, 1 << 16))
    await first
    await throttle.consume((1 << 16) - 1000)  # the rest of the grant: no new Want
    assert len(sent) == 1

    big = asyncio.create_task(throttle.consume(1 << 18))
    await asyncio.sleep(0)
    assert sent[1:] == [Want(2, 1 << 18)]
    throttle.granted(Grant(2, 1 << 18))
    await big
