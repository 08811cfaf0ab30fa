"""One MQTT broker connection, kept up forever: shared by the push trigger and announcements.

``BrokerLink.keep_connected`` runs a session until it ends or fails, then
waits a capped exponential backoff (with jitter) and starts another; a session
that got connected resets the backoff. The link's state (connected, since
when, how many connections) is what ``ctl status`` and the metrics show.
Nothing here decides what a session does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
from prometheus_client import Gauge
from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.config import BrokerConfig
from mirrord.sync.push import reconnect_delay

KEEPALIVE = 60  # seconds; the broker drops us (and we notice a dead broker) after 1.5x this
CALL_TIMEOUT = 10.0  # seconds for the CONNACK, a SUBACK, a PUBACK or the goodbye


def _read_password(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0] if lines else ""


async def broker_client(config: BrokerConfig, **options: Any) -> aiomqtt.Client:
    """A client for ``config``'s broker (not connected yet: ``async with`` it)."""
    password = (
        await asyncio.to_thread(_read_password, config.password_file)
        if config.password_file is not None
        else None
    )
    return aiomqtt.Client(
        config.host,
        config.port,
        identifier=config.client_id,
        username=config.username,
        password=password,
        keepalive=KEEPALIVE,
        timeout=CALL_TIMEOUT,
        **options,
    )


class BrokerLink:
    """The state of one broker connection, and the loop that keeps it up."""

    def __init__(
        self, config: BrokerConfig, gauge: Gauge, *, clock: Clock, log: FilteringBoundLogger
    ) -> None:
        self._broker = config
        self._gauge = gauge
        self._clock = clock
        self._log = log.bind(broker=config.url)
        self._changed = asyncio.Condition()  # connected, disconnected, or a message handled
        self.connected = False
        self.connected_since: float | None = None
        self.connections = 0  # sessions that got connected since start-up
        gauge.set(0)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate`` holds, checked at every connect, disconnect and message."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _set_connected(self, connected: bool, event: str, **fields: Any) -> None:
        self.connected = connected
        self._gauge.set(int(connected))
        if connected:
            self.connections += 1
            self.connected_since = self._clock.time()
        else:
            self.connected_since = None
        self._log.info(event, **fields)
        await self._notify()

    async def keep_connected(
        self, session: Callable[[], Awaitable[None]], failed_event: str, crashed_event: str
    ) -> None:
        """Run ``session`` again and again until cancelled; never raises but CancelledError.

        A session that fails is logged as ``failed_event`` (``crashed_event``,
        with the traceback, for an unexpected exception); one that got
        connected resets the backoff.
        """
        rng = random.Random()  # noqa: S311 - backoff jitter
        failures = 0
        while True:
            before = self.connections
            try:
                await session()
            except aiomqtt.MqttError as error:
                self._log.info(failed_event, error=str(error), failures=failures + 1)
            except OSError as error:  # the password file
                self._log.warning(failed_event, error=str(error), failures=failures + 1)
            except Exception:  # a bug must cost a reconnect, never the service
                self._log.exception(crashed_event)
            failures = 0 if self.connections != before else failures + 1
            delay = reconnect_delay(failures, self._broker.reconnect_max, rng.random())
            await self._clock.sleep(delay)
