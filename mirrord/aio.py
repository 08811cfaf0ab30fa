"""Small asyncio helpers that keep every task inside a TaskGroup."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def first_completed(*coroutines: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines until one returns, then cancel the rest."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(c) for c in coroutines]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
