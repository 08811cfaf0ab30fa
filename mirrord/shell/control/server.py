"""The control socket server: Unix stream socket, peer credentials, JSON lines.

Every connection is served by its own task inside the server's TaskGroup, so
a client that sends garbage, a 10 MB line, nothing at all, or disconnects in
the middle of a reply costs only its own connection. Access: root, the
daemon's own uid, and members of ``control.group`` (checked with SO_PEERCRED
and the peer's supplementary groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from mirrord.core.config import ControlConfig
from mirrord.core.errors import ConfigError, ControlError, MirrordError, ProtocolError
from mirrord.shell.control.protocol import (
    MAX_LINE,
    Request,
    error_response,
    parse_request,
    response,
)

MAX_CLIENTS = 64
_CRED = struct.Struct("3i")

Handler = Callable[[Request], Awaitable[Any]]


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end."""
    pid, uid, gid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return pid, uid, gid


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
_GID = struct.Struct("I")


def peer_groups(conn: socket.socket, pid: int) -> set[int]:
    """The peer's supplementary groups: from the socket itself, else from /proc.

    SO_PEERGROUPS works under ProtectProc=invisible, where another user's
    /proc/<pid> is hidden from mirrord.
    """
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GID.size * 256)
    except OSError:
        return supplementary_groups(pid)
    return {gid for (gid,) in _GID.iter_unpack(raw[: len(raw) // _GID.size * _GID.size])}


def supplementary_groups(pid: int) -> set[int]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return set()
    for line in status.splitlines():
        if line.startswith("Groups:"):
            return {int(g) for g in line.split()[1:]}
    return set()


async def _lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then discard what the client still sends (bounded), so the error
    reply is not lost to a reset when we close with unread input."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(2.0):
            discarded = 0
            while discarded < 64 * MAX_LINE and (chunk := await reader.read(MAX_LINE)):
                discarded += len(chunk)


def resolve_group(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError("control.group", f"no such group {name!r}") from None


class ControlServer:
    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        log: FilteringBoundLogger,
        group: str | None = None,
        idle_timeout: float = ControlConfig.idle_timeout,
    ) -> None:
        self.path = path
        self._handler = handler
        self._log = log
        self._gid = resolve_group(group)
        self._idle_timeout = idle_timeout
        self._clients = 0
        self._listener: socket.socket | None = None

    def allowed(self, uid: int, gid: int, groups: Callable[[], set[int]]) -> bool:
        if uid in (0, os.geteuid()):
            return True
        if self._gid is None:
            return False
        return gid == self._gid or self._gid in groups()

    def _bind(self) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket() or self.path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # a stale socket from a previous run
            else:
                probe.close()
                raise ControlError("in_use", f"{self.path} is in use by another process")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o117)  # born 0660: no window where others can connect
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        if self._gid is not None:
            os.chown(self.path, -1, self._gid)
        listener.listen(64)
        listener.setblocking(False)
        return listener

    def bind(self) -> None:
        """Create the socket now, so a bad path is an error at start-up, not later."""
        try:
            self._listener = self._bind()
        except OSError as error:
            raise ConfigError(
                "control.socket", f"cannot create {self.path}: {error.strerror}"
            ) from None
        self._log.info("control.listening", socket=str(self.path))

    async def serve(self) -> None:
        """Accept and serve clients until cancelled; the socket file is removed at the end."""
        if self._listener is None:
            self.bind()
        listener = self._listener
        assert listener is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    conn, _ = await loop.sock_accept(listener)
                    if self._clients >= MAX_CLIENTS:
                        conn.close()
                        continue
                    group.create_task(self._serve_client(conn))
        finally:
            listener.close()
            self._listener = None  # a restart by the supervisor binds again
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve_client(self, conn: socket.socket) -> None:
        self._clients += 1
        try:
            pid, uid, gid = peer_credentials(conn)
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_LINE)
            try:
                if not self.allowed(uid, gid, lambda: peer_groups(conn, pid)):
                    self._log.warning("control.client.refused", pid=pid, uid=uid)
                    writer.write(
                        error_response(
                            None, "forbidden", f"uid {uid} may not use mirrord's control socket"
                        )
                    )
                    await writer.drain()
                    await _lingering_close(reader, writer)
                    return
                await self._conversation(reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
        except (ConnectionError, OSError) as error:
            self._log.debug("control.client.gone", error=str(error))
        finally:
            self._clients -= 1

    async def _conversation(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(self._idle_timeout):
                    line = await reader.readline()
            except TimeoutError:
                return
            except ValueError:  # a line over MAX_LINE
                writer.write(error_response(None, "too_large", f"request over {MAX_LINE} bytes"))
                await writer.drain()
                await _lingering_close(reader, writer)
                return
            if not line:
                return
            reply = await self._answer(line)
            writer.write(reply)
            await writer.drain()

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = parse_request(line)
        except ProtocolError as error:
            return error_response(error.request_id, error.code, error.message)
        try:
            result = await self._handler(request)
        except ProtocolError as error:
            return error_response(request.id, error.code, error.message)
        except ControlError as error:
            return error_response(request.id, error.code, str(error))
        except MirrordError as error:
            return error_response(request.id, "failed", str(error))
        except Exception as error:  # a bug answers this request, the daemon carries on
            self._log.exception("control.command.crashed", cmd=request.cmd)
            return error_response(request.id, "internal", repr(error))
        self._log.info("control.command", cmd=request.cmd, args=request.args)
        return response(request.id, result)
