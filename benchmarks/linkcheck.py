"""Measuring a slow link from the client side: its round trip and one connection's rate."""

from __future__ import annotations

import http.client
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Observed:
    first_ms: float  # the first GET on a new connection: handshake + request, 2 RTT
    round_trip_ms: float  # median of later small GETs on the same connection: 1 RTT
    download_mbit: float  # one large GET over one new connection
    download_bytes: int


def _get(connection: http.client.HTTPConnection, path: str) -> int:
    connection.request("GET", path)
    response = connection.getresponse()
    size = len(response.read())
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    return size


def round_trips(port: int, path: str, samples: int = 9) -> tuple[float, float]:
    """(the first GET of a small ``path`` on a new connection, the median of the next), ms."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times: list[float] = []
    try:
        for _ in range(samples + 1):
            started = time.perf_counter()
            _get(connection, path)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    return times[0], statistics.median(times[1:])


def download_mbit(port: int, path: str) -> tuple[float, int]:
    """Mbit/s and bytes of one GET of ``path`` over one new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    try:
        size = _get(connection, path)
    finally:
        connection.close()
    return size * 8 / 1e6 / (time.perf_counter() - started), size


def observe(port: int, small: str, large: str) -> Observed:
    first, later = round_trips(port, small)
    rate, size = download_mbit(port, large)
    return Observed(first, later, rate, size)
