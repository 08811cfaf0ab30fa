"""Downstream announcements: after each publish, tell the T2s over MQTT, as Alpine does.

The service reads the publish feed (its own bounded queue: a publish never
waits for it) and sends one message per published directory, shaped by
:mod:`mirrord.sync.announce`. While the broker is unreachable it reconnects
with capped exponential backoff and keeps what went live meanwhile, once per
directory, to send when it is back. A message the broker refused or that met
a dropped connection is counted as failed and sent again after reconnecting.
Stopped (a reload that changed ``push.announce``), it gives what it has not
sent back to its subscription, for the instance that replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiomqtt
from structlog.typing import FilteringBoundLogger

from mirrord.core.aio import first_completed
from mirrord.core.clock import Clock
from mirrord.core.config import AnnounceConfig
from mirrord.core.metrics import Metrics
from mirrord.shell.mqtt_client import CALL_TIMEOUT, BrokerLink, broker_client
from mirrord.sync.announce import Announcement, Pending, announcement, default_prefix
from mirrord.sync.feed import Published, Subscription

OUTCOMES = ("sent", "failed", "dropped")


class MqttAnnouncer(BrokerLink):
    def __init__(
        self,
        config: AnnounceConfig,
        events: Subscription,
        *,
        metrics: Metrics,
        clock: Clock,
        log: FilteringBoundLogger,
    ) -> None:
        super().__init__(config, metrics.announce_connected, clock=clock, log=log)
        self._config = config
        self._events = events
        self._metrics = metrics
        self._pending = Pending()
        self._dropped_seen = 0
        self.prefix = config.topic_prefix  # resolved from this host's FQDN when unset
        self.sent = 0
        self.failed = 0
        self.last_sent: float | None = None
        for outcome in OUTCOMES:
            metrics.announce_messages.labels(outcome=outcome)

    def status(self) -> dict[str, Any]:
        return {
            "broker": self._config.url,
            "topic_prefix": self.prefix,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self._events.dropped,
            # taken from the feed and not sent, and published but not taken yet
            "pending": len(self._pending) + self._events.size(),
            "last_sent": self.last_sent,
        }

    async def run(self) -> None:
        """Announce until cancelled; never returns, never raises but CancelledError."""
        if self.prefix is None:
            self.prefix = default_prefix(await asyncio.to_thread(socket.getfqdn))
        self._log = self._log.bind(topic_prefix=self.prefix)
        try:
            await self.keep_connected(
                self._session, "announce.connect.failed", "announce.session.crashed"
            )
        finally:
            now = self._clock.time()
            unsent = [Published(d, (), now) for d in self._pending.directories()]
            self._events.give_back(unsent)

    async def _session(self) -> None:
        client = await broker_client(self._config)
        async with client:
            await self._set_connected(True, "announce.connected")
            try:
                await first_completed(self._send_until_failed(client), _until_lost(client))
            finally:
                await self._set_connected(
                    False, "announce.disconnected", pending=len(self._pending)
                )

    async def _send_until_failed(self, client: aiomqtt.Client) -> None:
        while True:
            message = await self._next()
            try:
                await client.publish(
                    message.topic,
                    message.payload,
                    qos=self._config.qos,
                    retain=self._config.retain,
                    timeout=CALL_TIMEOUT,
                )
            except aiomqtt.MqttError as error:
                self.failed += 1
                self._metrics.announce_messages.labels(outcome="failed").inc()
                self._log.info("announce.send.failed", topic=message.topic, error=str(error))
                return  # reconnect; the message stays pending
            self._pending.sent(message)
            self.sent += 1
            self.last_sent = self._clock.time()
            self._metrics.announce_messages.labels(outcome="sent").inc()
            self._log.info("announce.sent", topic=message.topic, payload=message.payload.decode())
            await self._notify()

    async def _next(self) -> Announcement:
        """The oldest pending message, after taking every event the feed holds."""
        while not self._pending:
            self._take(await self._events.get())
        for event in self._events.waiting():
            self._take(event)
        return self._pending.first()

    def _take(self, event: Published) -> None:
        dropped = self._events.dropped - self._dropped_seen
        self._dropped_seen = self._events.dropped
        if dropped:
            self._metrics.announce_messages.labels(outcome="dropped").inc(dropped)
            self._log.warning("announce.events.dropped", count=dropped)
        assert self.prefix is not None
        message = announcement(event, self.prefix)
        if message is None:
            self._log.warning("announce.event.skipped", directory=event.directory)
            return
        self._pending.add(message)


async def _until_lost(client: aiomqtt.Client) -> None:
    """Return when the connection is lost (nothing is subscribed: no message comes)."""
    with contextlib.suppress(aiomqtt.MqttError):
        async for _message in client.messages:
            pass
