"""core.aio.first_of_group: a TaskGroup's failure as the error that caused it."""

from __future__ import annotations

import asyncio

import pytest

from mirrord.core.aio import first_of_group
from mirrord.core.errors import MirrordError, ObjectStoreError


async def _fail(error: BaseException) -> None:
    raise error


async def test_our_error_comes_out_alone_and_the_other_tasks_are_cancelled() -> None:
    sleeper: asyncio.Task[None] | None = None
    with pytest.raises(ObjectStoreError, match="boom"), first_of_group(MirrordError):
        async with asyncio.TaskGroup() as group:
            sleeper = group.create_task(asyncio.sleep(3600))
            group.create_task(_fail(ObjectStoreError("key", "boom")))
    assert sleeper is not None and sleeper.cancelled()


async def test_nested_groups_are_unwrapped_to_the_first_error() -> None:
    async def inner() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(_fail(ObjectStoreError("key", "deep")))

    with pytest.raises(ObjectStoreError, match="deep"), first_of_group(MirrordError):
        async with asyncio.TaskGroup() as group:
            group.create_task(inner())


async def test_an_error_of_another_kind_stays_a_group() -> None:
    with pytest.raises(ExceptionGroup) as caught, first_of_group(MirrordError):
        async with asyncio.TaskGroup() as group:
            group.create_task(_fail(ValueError("a bug")))
    assert isinstance(caught.value.exceptions[0], ValueError)
