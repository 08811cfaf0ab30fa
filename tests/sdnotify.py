"""systemd's side of sd_notify, for tests of a real ``mirrord run``."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any


class NotifyListener:
    """What systemd would receive on $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    async def until(self, predicate: Any, within: float = 60) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                fields = dict(line.split("=", 1) for line in data.decode().splitlines())
                self.messages.append(fields)
                if predicate(fields):
                    return fields

    def close(self) -> None:
        self.sock.close()
