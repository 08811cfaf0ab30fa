"""What the published tree just changed, for the services that tell others.

A publish (or a rollback) announces one ``Published`` event after its index
is live. Downstream services (MQTT announcements to T2s, CDN purges) each
subscribe with their own bounded queue: a slow or broken subscriber loses
its oldest events and never blocks or fails a publish. A service stopped by
a reload gives back the events it took and had not finished; the instance
that replaces it, reading the same subscription, gets them first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

DEFAULT_BACKLOG = 1024


@dataclass(frozen=True)
class Published:
    """A directory of the published tree serves new content."""

    directory: str  # relative to publish.path, e.g. "v3.20/main/x86_64"
    changed: tuple[str, ...]  # relative paths whose bytes changed (indexes, links)
    at: float  # wall-clock time the change went live


@dataclass
class Subscription:
    """One subscriber's queue of events, oldest dropped when it is full."""

    name: str
    queue: asyncio.Queue[Published]
    dropped: int = 0
    returned: deque[Published] = field(default_factory=deque)  # given back, delivered first

    async def get(self) -> Published:
        if self.returned:
            return self.returned.popleft()
        return await self.queue.get()

    def waiting(self) -> list[Published]:
        """Every event there is now, without waiting (given-back ones first)."""
        events = list(self.returned)
        self.returned.clear()
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events

    def give_back(self, events: Iterable[Published]) -> None:
        """Events taken and not finished: the next reader gets them again, in this order."""
        self.returned.extendleft(reversed(list(events)))

    def size(self) -> int:
        return len(self.returned) + self.queue.qsize()

    def __aiter__(self) -> AsyncIterator[Published]:
        return self._events()

    async def _events(self) -> AsyncIterator[Published]:
        while True:
            yield await self.get()


@dataclass
class PublishFeed:
    backlog: int = DEFAULT_BACKLOG
    _subscribers: list[Subscription] = field(default_factory=list)

    def subscribe(self, name: str) -> Subscription:
        subscription = Subscription(name, asyncio.Queue(maxsize=self.backlog))
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def announce(self, event: Published) -> None:
        for subscription in self._subscribers:
            if subscription.queue.full():
                subscription.queue.get_nowait()
                subscription.dropped += 1
            subscription.queue.put_nowait(event)
