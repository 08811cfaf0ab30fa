"""sd_notify without a library: datagrams to ``$NOTIFY_SOCKET``.

``READY=1`` once the state is loaded, ``STATUS=`` lines as work progresses,
``WATCHDOG=1`` only while the event loop is really turning, ``RELOADING=1``
and ``STOPPING=1`` around reloads and shutdown. Without ``$NOTIFY_SOCKET``
(not under systemd) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

from mirrord.core.clock import Clock


class Notifier:
    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        self._socket: socket.socket | None = None
        if address:
            # "@name" is an abstract socket: a leading NUL byte on the wire.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str | int) -> bool:
        if self._socket is None or self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError:
            return False  # systemd gone or socket full: never fatal
        return True

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status)

    def status(self, text: str) -> None:
        self.send(status=text)

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(reloading=1, monotonic_usec=monotonic_usec)

    def stopping(self) -> None:
        self.send(stopping=1)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC``, if it is meant for us."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


async def watchdog(
    notifier: Notifier, interval: float, clock: Clock, healthy: Callable[[], bool]
) -> None:
    """Ping only while this coroutine gets scheduled on time and ``healthy()`` holds.

    A blocked event loop delays the next iteration past systemd's deadline, and a
    wedged daemon (``healthy`` false) stops pinging: either way systemd restarts us.
    """
    while True:
        started = clock.monotonic()
        await asyncio.sleep(0)  # a turn of the loop
        lag = clock.monotonic() - started
        if healthy() and lag < interval:
            notifier.send(watchdog=1)
        await clock.sleep(interval)
