"""Run the real daemon inside the test's event loop, with its socket and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mirrord.core.clock import Clock
from mirrord.core.config.parse import load_config
from mirrord.core.model import ArchKey
from mirrord.shell.control.client import call
from mirrord.shell.daemon import Daemon
from tests.helpers import Mirror, spawn_mirrord
from tests.nginx import free_port


def daemon_config(mirror: Mirror, *keys: ArchKey, **extra: Any) -> Path:
    settings: dict[str, Any] = {
        "control": {"socket": str(mirror.tmp / "control.sock")},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "interval": 3600,
    }
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(settings.get(name), dict):
            settings[name] = {**settings[name], **value}
        else:
            settings[name] = value
    return mirror.config_file(*keys, **settings)


@asynccontextmanager
async def running_daemon(
    mirror: Mirror, config_path: Path, *, clock: Clock | None = None
) -> AsyncIterator[Daemon]:
    daemon = Daemon(
        load_config(config_path), mirror.logs.logger(), config_path=config_path, clock=clock
    )
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(daemon.run())
        ready = group.create_task(daemon.ready.wait())
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # it failed to start: raise why
        try:
            yield daemon
        finally:
            daemon.request_stop()


async def ctl(daemon: Daemon, cmd: str, **args: Any) -> Any:
    socket = daemon.config.control.socket
    assert socket is not None
    return await call(socket, cmd, args)


async def synced(daemon: Daemon, runs: int, *keys: ArchKey) -> None:
    """Until each arch (default: every configured one) has ended ``runs`` syncs."""
    assert daemon.scheduler is not None
    for key in keys or tuple(daemon.config.arch_keys()):
        await daemon.scheduler.wait_for_runs(key, runs)


async def human_ctl(daemon: Daemon, *args: str) -> str:
    """``mirrord ctl ARGS`` as an operator types it (a real process): its stdout."""
    socket = daemon.config.control.socket
    assert socket is not None
    process = await spawn_mirrord(
        "ctl", "--socket", str(socket), *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    return out.decode()
