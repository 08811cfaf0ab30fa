"""Bandwidth shaping: a global token bucket, a time-of-day schedule, a rate meter.

Every downloaded chunk passes through ``TrafficControl.consume``. Over any
interval of T seconds the downloads take at most ``burst + rate * T`` bytes:
half the burst is the kernel's (each connection's receive buffer fills ahead
of the bucket, see ``limited_receive_buffer``; ``limited_segment`` keeps its
segments small enough that none is sent twice), half the bucket's. The bucket
starts empty whenever a limit begins, because the receive buffers of the
connections that open then fill at once. The rate in force is the
operator's override if set, else the schedule window covering the local time,
else ``fetch.rate_limit``; it changes without touching running downloads.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence

from structlog.typing import FilteringBoundLogger

from mirrord.core.aio import first_completed
from mirrord.core.clock import Clock
from mirrord.core.config import FetchConfig, ScheduleWindow
from mirrord.core.metrics import Metrics
from mirrord.core.units import format_bytes, format_mib, format_rate
from mirrord.fetch.httpstatus import limited_receive_buffer
from mirrord.fetch.tcppath import PathSample, burst_needed, carried

MAX_SLEEP = 0.25  # a rate change reaches waiting downloads within this long


class TokenBucket:
    """Holds half of ``burst``: the other half is the connections' receive buffers."""

    def __init__(self, rate: float | None, burst: int, clock: Clock) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = max(1, burst)
        self._tokens = 0.0 if rate is not None else float(self._capacity)
        self._stamp = clock.monotonic()
        self._lock = asyncio.Lock()
        self.passed = 0  # bytes let through while limited

    @property
    def rate(self) -> float | None:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def _capacity(self) -> int:
        return max(1, self._burst // 2)

    def set_rate(self, rate: float | None) -> None:
        self._refill()
        if self._rate is None and rate is not None:
            self._tokens = 0.0  # a limit begins: the receive buffers are its burst
        self._rate = rate

    def set_burst(self, burst: int) -> None:
        self._refill()
        self._burst = max(1, burst)
        self._tokens = min(self._tokens, float(self._capacity))

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self._rate is None:
            self._tokens = float(self._capacity)
        else:
            refilled = self._tokens + (now - self._stamp) * self._rate
            self._tokens = min(float(self._capacity), refilled)
        self._stamp = now

    async def consume(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may pass. Waiters are served first come, first served."""
        if self._rate is None:
            return
        async with self._lock:
            remaining = nbytes
            while remaining > 0:
                self._refill()
                if self._rate is None:
                    return
                take = min(remaining, self._capacity)
                if self._tokens >= take - 1e-3:  # float dust must not cause endless tiny sleeps
                    self._tokens -= take
                    remaining -= take
                    self.passed += take
                    continue
                await self._clock.sleep(min((take - self._tokens) / self._rate, MAX_SLEEP))


class RateMeter:
    """Bytes per second over a sliding window (for metrics and status)."""

    def __init__(self, clock: Clock, window: float = 5.0) -> None:
        self._clock = clock
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()
        self._total = 0
        self.bytes = 0  # everything ever counted

    def add(self, nbytes: int) -> None:
        now = self._clock.monotonic()
        self._samples.append((now, nbytes))
        self._total += nbytes
        self.bytes += nbytes
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self._window:
            self._total -= self._samples.popleft()[1]

    def rate(self) -> float:
        self._trim(self._clock.monotonic())
        return self._total / self._window


def local_minute_of_day(timestamp: float) -> float:
    moment = time.localtime(timestamp)
    return moment.tm_hour * 60 + moment.tm_min + moment.tm_sec / 60


def scheduled_rate(
    windows: Sequence[ScheduleWindow], default: float | None, minute: float
) -> float | None:
    """The rate of the window covering ``minute`` (0 <= minute < 1440), else ``default``."""
    for window in windows:
        if window.start <= minute < window.end:
            return window.rate_limit
    return default


def minutes_to_next_edge(windows: Sequence[ScheduleWindow], minute: float) -> float:
    edges = sorted({w.start for w in windows} | {w.end % 1440 for w in windows})
    for edge in edges:
        if edge > minute:
            return edge - minute
    return (edges[0] + 1440 - minute) if edges else 1440.0


_UNSET = object()


class TrafficControl:
    """The Throttle every download goes through, plus the knobs to steer it."""

    def __init__(
        self,
        config: FetchConfig,
        *,
        clock: Clock,
        metrics: Metrics,
        log: FilteringBoundLogger,
        minute_of_day: Callable[[float], float] = local_minute_of_day,
    ) -> None:
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._log = log
        self._minute_of_day = minute_of_day
        self._override: object = _UNSET
        self.bucket = TokenBucket(None, config.burst, clock)
        self.meter = RateMeter(clock)
        self.changed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._out_of_reach: tuple[float, int] | None = None  # (rate, burst) warned about
        self._pinned: PathSample | None = None  # the newest limited connection's
        self.origin_rtt: float | None = None
        self._metrics.window_bound.set(float("inf"))  # until a limited connection says
        self.apply()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the rate in force changes."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def consume(self, nbytes: int) -> None:
        await self.bucket.consume(nbytes)
        self.meter.add(nbytes)

    @property
    def override(self) -> float | str | None:
        """The operator's rate, or "schedule" when none is set."""
        return "schedule" if self._override is _UNSET else self._override  # type: ignore[return-value]

    def wanted_rate(self) -> float | None:
        if self._override is not _UNSET:
            return self._override  # type: ignore[return-value]
        minute = self._minute_of_day(self._clock.time())
        return scheduled_rate(self._config.schedule, self._config.rate_limit, minute)

    def apply(self) -> float | None:
        rate = self.wanted_rate()
        if rate != self.bucket.rate:
            self.bucket.set_rate(rate)
            self._log.info("traffic.rate.changed", rate=format_rate(rate), bytes_per_second=rate)
            for listener in list(self._listeners):
                listener()
        self._metrics.rate_limit.set(float("inf") if rate is None else rate)
        if rate is None:
            self._metrics.window_bound.set(float("inf"))
        return rate

    def observe_path(self, sample: PathSample) -> None:
        """A new connection's round trip and window: say if the windows hold the limit back."""
        self.origin_rtt = sample.rtt
        self._metrics.origin_rtt.set(sample.rtt)
        if not sample.pinned:
            return
        self._pinned = sample
        rate, burst = self.bucket.rate, self.bucket.burst
        if rate is None:  # a connection opened under a limit that has ended since
            return
        self._metrics.window_bound.set(carried(self._config.connections, sample))
        held = self.held_back()
        if held is None or self._out_of_reach == (rate, burst):
            return
        self._out_of_reach = (rate, burst)
        most, needed = held
        self._log.warning(
            "fetch.rate_limit.out_of_reach",
            rate=format_rate(rate),
            rtt_ms=round(sample.rtt * 1000, 1),
            window=format_bytes(sample.window),
            connections=self._config.connections,
            most=format_rate(most),
            burst=format_mib(burst),
            burst_needed=format_mib(needed),
            note="at this round trip the connections' receive windows, which fetch.burst "
            "bounds under a limit, carry less than the limit; a fetch.burst of burst_needed "
            "lets the downloads reach it (and one second exceed the rate by as much)",
        )

    def held_back(self) -> tuple[float, int] | None:
        """While the limit in force is out of the windows' reach: the most they carry
        (``fetch.connections`` of them at the last limited connection's round trip),
        and the burst that would reach the limit."""
        rate, sample = self.bucket.rate, self._pinned
        if rate is None or sample is None:
            return None
        most = carried(self._config.connections, sample)
        return (most, burst_needed(rate, self.bucket.burst, most)) if most < rate else None

    def set_override(self, rate: float | None) -> None:
        """Force a rate (None = unlimited) until ``clear_override`` or a reload."""
        self._override = rate
        self.apply()
        self.changed.set()

    def clear_override(self) -> None:
        self._override = _UNSET
        self.apply()
        self.changed.set()

    def receive_buffer(self, connections: int) -> int | None:
        """SO_RCVBUF for a new connection: while limited, kernel buffering across all
        connections stays within half the burst."""
        return limited_receive_buffer(self.bucket.rate, self.bucket.burst, connections)

    def reconfigure(self, config: FetchConfig) -> None:
        if (config.burst, config.connections) != (self._config.burst, self._config.connections):
            self._pinned = None  # its window was sized for the old burst and connections
            self._metrics.window_bound.set(float("inf"))
        self._config = config
        self.bucket.set_burst(config.burst)
        self.apply()
        self.changed.set()

    async def run(self) -> None:
        """Follow the schedule: re-apply at every window edge (and on any change)."""
        while True:
            self.changed.clear()
            self.apply()
            if not self._config.schedule:
                await self.changed.wait()
                continue
            minute = self._minute_of_day(self._clock.time())
            wait = minutes_to_next_edge(self._config.schedule, minute) * 60 + 0.5
            await first_completed(self._clock.sleep(min(wait, 3600.0)), self.changed.wait())
