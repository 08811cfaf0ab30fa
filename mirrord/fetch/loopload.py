"""How busy the daemon's event loop is: its thread's CPU time over wall time.

Fetch worker processes pay off only while the daemon's loop is what holds the
downloads back (an origin on the LAN or on loopback: hundreds of MB/s to
parse, hash and write). From an origin across the internet the loop mostly
waits for the network, and workers would add their start-up (~0.15 CPU-s
each) and a message each way per file for nothing: a 20 ms round trip's full
sync cost 1.25 CPU-s without them and 1.77 with them, and took no longer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mirrord.core.clock import Clock

LOAD_WINDOW = 0.25  # seconds of wall time a busy fraction is taken over
STALE_AFTER = 4  # windows: a window left open longer spans an idle spell; restart it


class LoopLoad:
    """The busy fraction of the last whole window, read from the loop's own thread.

    ``observe`` is called as work passes (each download asks), so a window closes
    at the first call after it is ``window`` long; one left open across an idle
    spell starts again, forgetting the last fraction, instead of averaging the
    spell in.
    """

    def __init__(
        self,
        clock: Clock,
        cpu: Callable[[], float] = time.thread_time,
        window: float = LOAD_WINDOW,
    ) -> None:
        self._clock = clock
        self._cpu = cpu
        self._window = window
        self._opened: tuple[float, float] | None = None  # (wall, cpu) as the window opened
        self.busy: float | None = None  # the last whole window's fraction, None before one

    def observe(self) -> float | None:
        now = self._clock.monotonic()
        if self._opened is not None:
            wall, cpu = self._opened
            elapsed = now - wall
            if elapsed < self._window:
                return self.busy
            if elapsed <= STALE_AFTER * self._window:
                used = self._cpu()
                self.busy = min(1.0, max(0.0, (used - cpu) / elapsed))
                self._opened = (now, used)
                return self.busy
            self.busy = None  # an idle spell: what the loop did before says nothing now
        self._opened = (now, self._cpu())
        return self.busy
