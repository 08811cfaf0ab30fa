"""What HTTP responses mean to mirrord: status mapping, dates, Retry-After, buffer sizes.

Pure functions of the origin's HTTP client (``mirrord.fetch.http1``: polls,
listings and package bodies).
"""

from __future__ import annotations

from collections.abc import Mapping

from mirrord import __version__
from mirrord.core.errors import OriginError, PermanentOriginError, TransientOriginError

USER_AGENT = f"mirrord/{__version__}"
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524}

MIN_RECEIVE_BUFFER = 16 * 1024
MAX_RECEIVE_BUFFER = 4 * 1024 * 1024
SEGMENTS_PER_BUFFER = 8
MAX_SEGMENT = 32767  # the largest TCP_MAXSEG Linux accepts


def limited_receive_buffer(rate: float | None, burst: int, connections: int) -> int | None:
    """SO_RCVBUF per connection so that all of them buffer at most half the burst.

    The kernel doubles what SO_RCVBUF asks for (its bookkeeping), and a
    rate-limited reader keeps its buffer full, so each connection may hold
    twice its share ahead of the token bucket.
    """
    if rate is None:
        return None
    share = burst // (4 * max(1, connections))
    return max(MIN_RECEIVE_BUFFER, min(MAX_RECEIVE_BUFFER, share))


def limited_segment(receive_buffer: int) -> int:
    """TCP_MAXSEG for a connection pinned to ``receive_buffer``: segments that fit it
    several times over.

    A window of two or three segments (loopback's are 32-64 KiB, jumbo frames' 9
    KiB) stalls whenever the reader waits for tokens: the sender's retransmission
    timer fires on segments that arrived but were not acknowledged yet, and sends
    them again, so the wire carries more than the limit lets through (12 MB of a
    20 MB/s sync's first three seconds on loopback). The smallest buffer's cap, 2 KiB,
    is above Ethernet's 1460: over most links this changes nothing.
    """
    return min(MAX_SEGMENT, receive_buffer // SEGMENTS_PER_BUFFER)


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    # Imported here: the email package is ~1 MiB of every fetch worker, which needs a
    # date only from a Retry-After in one, rarely.
    import email.utils

    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²": float() refuses what isdigit allows
        return float(value)
    when = parse_http_date(value)
    return None if when is None else max(0.0, when - now)


def status_error(
    url: str, status: int, reason: str | None, headers: Mapping[str, str], now: float
) -> OriginError:
    """The error for a status that is not what we asked for; ``headers`` as the client has them."""
    text = f"HTTP {status} {reason or ''}".strip()
    if status in _TRANSIENT_STATUS or status >= 500:
        # lower case, as http1 keeps header names
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        return TransientOriginError(url, text, status, retry_after)
    return PermanentOriginError(url, text, status)
