"""What the kernel knows of a connection's path: its round trip and receive window.

Under a rate limit each connection's receive buffer is pinned (see
``httpstatus.limited_receive_buffer``), so its window is fixed, and one
connection carries at most a window per round trip. A distant origin can then
hold the downloads under the limit: ``carried`` says how far, ``burst_needed``
what ``fetch.burst`` would lift it.
"""

from __future__ import annotations

import math
import socket
import struct
from dataclasses import dataclass
from typing import Any

# struct tcp_info: eight one-byte fields, then 32-bit ones; tcpi_rtt (microseconds,
# the kernel's smoothed estimate) is the sixteenth of those
_TCPI_RTT = 8 + 15 * 4
_MIB = 1 << 20
HEADROOM = 1.2


@dataclass(frozen=True, slots=True)
class PathSample:
    rtt: float  # seconds
    window: int  # bytes the kernel lets be on the way or unread at once
    pinned: bool  # the receive buffer was fixed (a rate limit), so the window stays


def sample_path(sock: Any, *, pinned: bool) -> PathSample | None:
    """Read a connected TCP socket's round trip and window; None if the kernel won't say."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_RTT + 4)
        window = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_RTT + 4:
        return None
    (rtt_us,) = struct.unpack_from("=I", info, _TCPI_RTT)
    return PathSample(rtt_us / 1e6, int(window), pinned)


def carried(connections: int, sample: PathSample) -> float:
    """Bytes a second that ``connections`` downloads at once can carry, each with
    ``sample.window`` over ``sample.rtt`` (infinite on a path with no round trip)."""
    return connections * sample.window / sample.rtt if sample.rtt > 0 else math.inf


def burst_needed(rate: float, burst: int, carried_now: float) -> int:
    """A fetch.burst (whole MiB) whose windows carry ``rate``: they grow with the burst.

    With a fifth to spare: a connection carries a window per round trip only at
    best (delayed ACKs, slow start after each idle spell).
    """
    return math.ceil(burst * rate * HEADROOM / carried_now / _MIB) * _MIB
