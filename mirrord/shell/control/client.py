"""The client side of the control socket, as ``mirrord ctl`` uses it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from mirrord.core.errors import ControlError, MirrordError
from mirrord.shell.control.protocol import MAX_LINE, request_line

CLIENT_LIMIT = 64 * MAX_LINE  # replies (status of many arches) may be long


class DaemonUnreachable(MirrordError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"cannot reach the daemon at {path}: {reason}")


async def call(
    path: Path, cmd: str, args: dict[str, Any] | None = None, answer_within: float = 30.0
) -> Any:
    """Send one request; return its result or raise ControlError with the daemon's reason."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=CLIENT_LIMIT)
    except FileNotFoundError:
        raise DaemonUnreachable(path, "no such socket (is mirrord running?)") from None
    except PermissionError:
        raise DaemonUnreachable(
            path, "permission denied (root, mirrord's user or control.group)"
        ) from None
    except OSError as error:
        raise DaemonUnreachable(path, error.strerror or str(error)) from None
    try:
        writer.write(request_line(cmd, args))
        await writer.drain()
        async with asyncio.timeout(answer_within):
            line = await reader.readline()
    except TimeoutError:
        raise DaemonUnreachable(path, f"no answer within {answer_within:g} s") from None
    except (ConnectionError, ValueError) as error:
        raise DaemonUnreachable(path, f"connection failed: {error}") from None
    finally:
        writer.close()
    if not line:
        raise DaemonUnreachable(path, "the daemon closed the connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        failure = reply.get("error") or {}
        raise ControlError(
            str(failure.get("code", "failed")), str(failure.get("message", "failed"))
        )
    return reply.get("result")
