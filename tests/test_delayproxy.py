"""The delay proxy's schedule (benchmarks/delayproxy.py): a bottleneck, then a delay line.

The proxy itself is exercised end to end by the benchmarks' quick run
(tests/test_benchmarks_smoke.py checks the round trip and the rate it measures).
"""

from __future__ import annotations

import pytest

from benchmarks.delayproxy import Bottleneck, Link

LINK = Link(rtt=0.080, rate=1_000_000.0)  # 40 ms each way, 1 MB/s


def test_a_chunk_arrives_after_its_serialisation_and_half_the_round_trip() -> None:
    bottleneck = Bottleneck(LINK, opened_at=10.0)
    assert bottleneck.send(10.0, 100_000) == pytest.approx(10.0 + 0.1 + 0.04)
    assert bottleneck.free_at == pytest.approx(10.1)


def test_chunks_in_flight_together_keep_the_rate_not_one_delay_each() -> None:
    bottleneck = Bottleneck(LINK, opened_at=0.0)
    arrivals = [bottleneck.send(0.0, 50_000) for _ in range(4)]
    # spaced by their serialisation only: 200 KB in 0.2 s plus one delay, not four delays
    assert arrivals == pytest.approx([0.09, 0.14, 0.19, 0.24])


def test_an_idle_link_does_not_bank_credit() -> None:
    bottleneck = Bottleneck(LINK, opened_at=0.0)
    bottleneck.send(0.0, 10_000)
    assert bottleneck.send(5.0, 10_000) == pytest.approx(5.0 + 0.01 + 0.04)


def test_a_new_connection_carries_nothing_before_its_handshake() -> None:
    opened = 3.0
    upstream = Bottleneck(LINK, opened_at=opened + LINK.rtt)
    request = upstream.send(opened, 200)
    # request sent at once after connect() returned: it reaches the server 1.5 RTT later
    assert request == pytest.approx(opened + LINK.rtt + 200 / LINK.rate + LINK.one_way)
