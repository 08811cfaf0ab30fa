"""A work queue that takes turns between arches.

A 20,000-package arch must not starve a 50-package one: ``get`` hands out one
job per arch in rotation, so every arch advances at the same pace in jobs and
small arches finish (and publish) first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Generic, TypeVar

from mirrord.core.errors import QueueClosed
from mirrord.core.model import ArchKey

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._lanes: OrderedDict[ArchKey, deque[T]] = OrderedDict()
        self._ready = asyncio.Event()
        self._closed = False
        self._size = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self._size

    def put(self, key: ArchKey, item: T) -> None:
        if self._closed:
            raise QueueClosed()
        self._lanes.setdefault(key, deque()).append(item)
        self._size += 1
        self._ready.set()

    def get_nowait(self) -> T | None:
        if not self._lanes:
            return None
        key, lane = next(iter(self._lanes.items()))
        item = lane.popleft()
        self._size -= 1
        if lane:
            self._lanes.move_to_end(key)  # next turn goes to the next arch
        else:
            del self._lanes[key]
        if not self._lanes:
            self._ready.clear()
        return item

    async def get(self) -> T:
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed:
                raise QueueClosed()
            await self._ready.wait()

    def close(self) -> None:
        """Wake every waiting ``get``; they drain what is left, then raise QueueClosed."""
        self._closed = True
        self._ready.set()
