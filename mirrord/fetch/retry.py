"""The retry policy for talking to the origin (tenacity, on the injectable clock).

Only TransientOriginError is retried: exponential backoff with jitter, or the
origin's Retry-After when it sends one; at most ``fetch.attempts`` tries and
``fetch.retry_max_time`` seconds in total. The first try runs without
tenacity's machinery: almost every request succeeds at once, and at thousands
of small packages a second that overhead shows.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from mirrord.core.clock import Clock
from mirrord.core.config import FetchConfig
from mirrord.core.errors import TransientOriginError

MAX_BACKOFF = 30.0
T = TypeVar("T")


class OnRetry(Protocol):
    def __call__(self, attempt: int, error: BaseException, wait: float) -> None: ...


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

    def out_of_budget(attempts_made: int) -> bool:
        return (
            attempts_made >= config.attempts or clock.monotonic() - started >= config.retry_max_time
        )

    try:
        return await attempt()
    except TransientOriginError as error:
        if out_of_budget(1):
            raise
        wait = delay_before_retry(error, 1, rng, config.retry_max_time)
        on_retry(1, error, wait)
        await clock.sleep(wait)

    def stop(state: RetryCallState) -> bool:
        return out_of_budget(state.attempt_number + 1)

    def wait_for(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return delay_before_retry(error, state.attempt_number + 1, rng, config.retry_max_time)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        assert error is not None
        on_retry(state.attempt_number + 1, error, state.upcoming_sleep)

    async def again() -> T:  # tenacity needs a coroutine function, not a lambda
        return await attempt()

    policy = AsyncRetrying(
        stop=stop,
        wait=wait_for,
        retry=retry_if_exception(is_transient),
        sleep=clock.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    result: T = await policy(again)
    return result
