"""The push trigger: subscribe to the origin's MQTT announcements, sync what they name.

One connection at a time; when it fails or drops, reconnect with capped
exponential backoff, forever. The scheduler's own timers keep polling
meanwhile, so a broker that is down only costs freshness. Messages are
routed by :func:`mirrord.sync.push.route_push`; a push never releases an
arch an operator holds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.config import MqttConfig
from mirrord.core.metrics import Metrics
from mirrord.sync.push import Ignored, PushOutcome, push_outcome, reconnect_delay, route_push
from mirrord.sync.scheduler import Scheduler

KEEPALIVE = 60  # seconds; the broker drops us (and we notice a dead broker) after 1.5x this
CALL_TIMEOUT = 10.0  # seconds for the CONNACK, a SUBACK or the goodbye
QUEUE_LIMIT = 1000  # messages received and not yet routed; more are dropped by the client
LOG_PREVIEW = 80  # bytes of an ignored payload or topic shown in the log


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


def _read_password(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0] if lines else ""


class MqttPushListener:
    def __init__(
        self,
        config: MqttConfig,
        scheduler: Scheduler,
        *,
        metrics: Metrics,
        clock: Clock,
        log: FilteringBoundLogger,
    ) -> None:
        self._config = config
        self._scheduler = scheduler
        self._metrics = metrics
        self._clock = clock
        self._log = log.bind(broker=config.url)
        self._rng = random.Random()  # noqa: S311 - backoff jitter
        self._changed = asyncio.Condition()  # connected, disconnected, or a message routed
        self.connected = False
        self.connected_since: float | None = None
        self.connections = 0  # successful subscriptions since start-up
        self.messages = 0  # messages routed or ignored since start-up
        self.last_push: float | None = None  # when a message last triggered a sync
        for outcome in PushOutcome:
            metrics.push_messages.labels(outcome=outcome)
        for reason in Ignored:
            metrics.push_ignored.labels(reason=reason)
        metrics.push_connected.set(0)

    def status(self) -> dict[str, Any]:
        return {
            "broker": self._config.url,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "messages": self.messages,
            "last_push": self.last_push,
        }

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate`` holds, checked at every connect, disconnect and message."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def run(self) -> None:
        """Stay subscribed until cancelled; never returns, never raises but CancelledError."""
        failures = 0
        while True:
            connections = self.connections
            try:
                await self._subscribed_session()
            except aiomqtt.MqttError as error:
                self._log.info("push.connect.failed", error=str(error), failures=failures + 1)
            except OSError as error:  # the password file
                self._log.warning("push.connect.failed", error=str(error), failures=failures + 1)
            except Exception:  # a bug must cost a reconnect, never the push trigger
                self._log.exception("push.session.crashed")
            failures = 0 if self.connections != connections else failures + 1
            delay = reconnect_delay(failures, self._config.reconnect_max, self._rng.random())
            await self._clock.sleep(delay)

    async def _subscribed_session(self) -> None:
        config = self._config
        password = (
            await asyncio.to_thread(_read_password, config.password_file)
            if config.password_file is not None
            else None
        )
        client = aiomqtt.Client(
            config.host,
            config.port,
            identifier=config.client_id,
            username=config.username,
            password=password,
            keepalive=KEEPALIVE,
            timeout=CALL_TIMEOUT,
            max_queued_incoming_messages=QUEUE_LIMIT,
        )
        async with client:
            for topic in config.topics:
                await client.subscribe(topic, qos=0)
            await self._set_connected(True)
            try:
                async for message in client.messages:
                    self._route(message.topic.value, _payload_bytes(message.payload))
                    self.messages += 1
                    await self._notify()
            finally:
                await self._set_connected(False)

    async def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._metrics.push_connected.set(int(connected))
        if connected:
            self.connections += 1
            self.connected_since = self._clock.time()
            self._log.info("push.connected", topics=list(self._config.topics))
        else:
            self.connected_since = None
            self._log.info("push.disconnected")
        await self._notify()

    def _route(self, topic: str, payload: bytes) -> None:
        route = route_push(payload, topic, self._scheduler.scheduled)
        if route.ignored is not None:
            self._metrics.push_messages.labels(outcome=PushOutcome.IGNORED).inc()
            self._metrics.push_ignored.labels(reason=route.ignored).inc()
            # Announcements for arches this mirror does not carry are routine: debug.
            log = self._log.debug if route.ignored is Ignored.NOT_CONFIGURED else self._log.info
            log(
                "push.message.ignored",
                reason=str(route.ignored),
                topic=topic[:LOG_PREVIEW],
                payload=repr(payload[:LOG_PREVIEW]),
                size=len(payload),
            )
            return
        triggers = {key: self._scheduler.request(key, release=False) for key in route.keys}
        outcome = push_outcome(triggers.values())
        self._metrics.push_messages.labels(outcome=outcome).inc()
        self.last_push = self._clock.time()
        self._log.info(
            "push.message.routed",
            outcome=str(outcome),
            arches={str(key): str(trigger) for key, trigger in triggers.items()},
        )
