"""The push trigger: subscribe to the origin's MQTT announcements, sync what they name.

One connection at a time; when it fails or drops, reconnect with capped
exponential backoff, forever. The scheduler's own timers keep polling
meanwhile, so a broker that is down only costs freshness. Messages are
routed by :func:`mirrord.sync.push.route_push`; a push never releases an
arch an operator holds.
"""

from __future__ import annotations

from typing import Any

from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.config import MqttConfig
from mirrord.core.metrics import Metrics
from mirrord.shell.mqtt_client import BrokerLink, broker_client
from mirrord.sync.push import Ignored, PushOutcome, push_outcome, route_push
from mirrord.sync.releases import ReleaseMirror
from mirrord.sync.scheduler import Scheduler, Trigger

QUEUE_LIMIT = 1000  # messages received and not yet routed; more are dropped by the client
LOG_PREVIEW = 80  # bytes of an ignored payload or topic shown in the log


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class MqttPushListener(BrokerLink):
    def __init__(
        self,
        config: MqttConfig,
        scheduler: Scheduler,
        *,
        metrics: Metrics,
        clock: Clock,
        log: FilteringBoundLogger,
        releases: ReleaseMirror | None = None,
    ) -> None:
        super().__init__(config, metrics.push_connected, clock=clock, log=log)
        self._config = config
        self._scheduler = scheduler
        self._releases = releases  # None: no releases trees configured
        self._metrics = metrics
        self.messages = 0  # messages routed or ignored since start-up
        self.last_push: float | None = None  # when a message last triggered a sync
        for outcome in PushOutcome:
            metrics.push_messages.labels(outcome=outcome)
        for reason in Ignored:
            metrics.push_ignored.labels(reason=reason)

    def status(self) -> dict[str, Any]:
        return {
            "broker": self._config.url,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "messages": self.messages,
            "last_push": self.last_push,
        }

    async def run(self) -> None:
        """Stay subscribed until cancelled; never returns, never raises but CancelledError."""
        await self.keep_connected(
            self._subscribed_session, "push.connect.failed", "push.session.crashed"
        )

    async def _subscribed_session(self) -> None:
        client = await broker_client(self._config, max_queued_incoming_messages=QUEUE_LIMIT)
        async with client:
            for topic in self._config.topics:
                await client.subscribe(topic, qos=0)
            await self._set_connected(True, "push.connected", topics=list(self._config.topics))
            try:
                async for message in client.messages:
                    self._route(message.topic.value, _payload_bytes(message.payload))
                    self.messages += 1
                    await self._notify()
            finally:
                await self._set_connected(False, "push.disconnected")

    def _route(self, topic: str, payload: bytes) -> None:
        releases = self._releases
        tree = releases.configured if releases is not None else (lambda _: False)
        route = route_push(payload, topic, self._scheduler.scheduled, tree)
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
        triggers = {str(key): self._scheduler.request(key, release=False) for key in route.keys}
        if route.trees and releases is not None:  # a releases pass; a hold stays a hold
            answer = Trigger(releases.ask())
            triggers.update({directory: answer for directory in route.trees})
        outcome = push_outcome(triggers.values())
        self._metrics.push_messages.labels(outcome=outcome).inc()
        self.last_push = self._clock.time()
        self._log.info(
            "push.message.routed",
            outcome=str(outcome),
            arches={name: str(trigger) for name, trigger in triggers.items()},
        )
