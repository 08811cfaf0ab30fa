"""The retry policy for talking to the origin (tenacity, on the injectable clock).

Only TransientOriginError is retried: exponential backoff with jitter, or the
origin's Retry-After when it sends one; at most ``fetch.attempts`` tries and
``fetch.retry_max_time`` seconds in total.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from mirrord.clock import Clock
from mirrord.config import FetchConfig
from mirrord.errors import TransientOriginError

MAX_BACKOFF = 30.0


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientOriginError)


def delay_before_retry(
    error: BaseException | None, attempt: int, rng: random.Random, cap: float
) -> float:
    """Seconds to wait after failed ``attempt`` (1-based)."""
    retry_after = error.retry_after if isinstance(error, TransientOriginError) else None
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    base = min(MAX_BACKOFF, 0.5 * 2.0 ** (attempt - 1))
    return base / 2 + rng.uniform(0, base / 2)


def retrying(
    config: FetchConfig,
    clock: Clock,
    rng: random.Random,
    on_retry: Callable[[RetryCallState], None],
) -> AsyncRetrying:
    started = clock.monotonic()

    def stop(state: RetryCallState) -> bool:
        return (
            state.attempt_number >= config.attempts
            or clock.monotonic() - started >= config.retry_max_time
        )

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return delay_before_retry(error, state.attempt_number, rng, config.retry_max_time)

    return AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception(is_transient),
        sleep=clock.sleep,
        before_sleep=on_retry,
        reraise=True,
    )


def retry_reason(state: RetryCallState) -> tuple[str, BaseException | None]:
    error = state.outcome.exception() if state.outcome else None
    status = getattr(error, "status", None)
    return (f"http_{status}" if status else "network"), error
