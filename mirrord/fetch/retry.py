"""The retry policy for talking to the origin, on the injectable clock.

Only TransientOriginError is retried: exponential backoff with jitter, or the
origin's Retry-After when it sends one; at most ``fetch.attempts`` tries and
``fetch.retry_max_time`` seconds in total. A plain loop, not tenacity: it runs
in every fetch worker, where tenacity's import was ~0.5 MiB (issue 15), and
its machinery cost time at thousands of small packages a second.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from mirrord.core.clock import Clock
from mirrord.core.config import FetchConfig
from mirrord.core.errors import TransientOriginError

MAX_BACKOFF = 30.0
T = TypeVar("T")


class OnRetry(Protocol):
    def __call__(self, attempt: int, error: BaseException, wait: float) -> None: ...


def delay_before_retry(
    error: BaseException | None, attempt: int, rng: random.Random, cap: float
) -> float:
    """Seconds to wait after failed ``attempt`` (1-based)."""
    retry_after = error.retry_after if isinstance(error, TransientOriginError) else None
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    base = min(MAX_BACKOFF, 0.5 * 2.0 ** (attempt - 1))
    return base / 2 + rng.uniform(0, base / 2)


def retry_reason(error: BaseException) -> str:
    status = getattr(error, "status", None)
    return f"http_{status}" if status else "network"


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    config: FetchConfig,
    clock: Clock,
    rng: random.Random,
    on_retry: OnRetry,
) -> T:
    started = clock.monotonic()
    made = 0
    while True:
        made += 1
        try:
            return await attempt()
        except TransientOriginError as error:
            if made >= config.attempts or clock.monotonic() - started >= config.retry_max_time:
                raise
            wait = delay_before_retry(error, made, rng, config.retry_max_time)
            on_retry(made, error, wait)
            await clock.sleep(wait)
