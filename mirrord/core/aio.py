"""Small asyncio helpers that keep every task inside a TaskGroup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


async def first_completed(*coroutines: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines until one returns, then cancel the rest."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(c) for c in coroutines]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception a TaskGroup collected, out of any nested groups."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


@contextmanager
def first_of_group(*kinds: type[BaseException]) -> Iterator[None]:
    """A TaskGroup's failure re-raised as the first error it collected, when that is one
    of ``kinds`` (the others were cancelled because of it); any other group as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        first = _first_error(group)
        if isinstance(first, kinds):
            raise first from None
        raise


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop. Only process entry points call this."""
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(main)
