"""A real aiohttp origin on 127.0.0.1 serving a repository tree, with fault injection.

Used by ``mirrord demo`` and the tests. Normal requests get aiohttp's
FileResponse (ETag, Last-Modified, conditional GET, Range, If-Range), so
mirrord talks to it exactly as it talks to nginx. Tests can queue faults per
path: error statuses, connection resets and stalls mid-body, short or wrong
bodies, and ignoring Range.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

from aiohttp import web


@dataclass(frozen=True)
class Fault:
    """What to do instead of serving the file, once."""

    kind: str  # status | reset | stall | truncate | corrupt | ignore_range | delay
    status: int = 500
    after: int = 0  # bytes of the body sent before the fault strikes
    seconds: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def http(cls, status: int, **headers: str) -> Fault:
        return cls("status", status=status, headers=headers)

    @classmethod
    def reset(cls, after: int) -> Fault:
        return cls("reset", after=after)

    @classmethod
    def stall(cls, after: int = 0) -> Fault:
        return cls("stall", after=after)

    @classmethod
    def truncate(cls, length: int) -> Fault:
        return cls("truncate", after=length)

    @classmethod
    def corrupt(cls, at: int = -1) -> Fault:
        return cls("corrupt", after=at)

    @classmethod
    def ignore_range(cls) -> Fault:
        return cls("ignore_range")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally, but only after ``seconds`` (a slow origin)."""
        return cls("delay", seconds=seconds)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    fault: str | None


class OriginServer:
    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = root.resolve()
        self.host = host
        self.port = port
        self.requests: list[RequestRecord] = []
        self.faults: dict[str, deque[Fault]] = {}
        self.supports_range = True
        self.release_stalls = asyncio.Event()
        self.request_seen = asyncio.Condition()
        self.stalled = asyncio.Event()
        self.delaying = asyncio.Event()  # a delayed request has arrived
        self.active_packages = 0
        self.max_active_packages = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_fault(self, path: str, *faults: Fault) -> None:
        self.faults.setdefault("/" + path.lstrip("/"), deque()).extend(faults)

    def requests_for(self, path: str) -> list[RequestRecord]:
        wanted = "/" + path.lstrip("/")
        return [r for r in self.requests if r.path == wanted]

    def package_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.path.endswith(".apk")]

    async def wait_for_requests(self, predicate: object, count: int = 1) -> None:
        """Wait until ``count`` recorded requests satisfy ``predicate(record)``."""
        assert callable(predicate)
        async with self.request_seen:
            await self.request_seen.wait_for(
                lambda: sum(1 for r in self.requests if predicate(r)) >= count
            )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        app.router.add_route("HEAD", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.release_stalls.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OriginServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _record(self, request: web.Request, status: int, fault: str | None) -> None:
        self.requests.append(
            RequestRecord(request.method, request.path, status, dict(request.headers), fault)
        )
        async with self.request_seen:
            self.request_seen.notify_all()

    def _resolve(self, request: web.Request) -> Path | None:
        relative = request.path.lstrip("/")
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.path.endswith(".apk"):
            return await self._serve(request)
        self.active_packages += 1
        self.max_active_packages = max(self.max_active_packages, self.active_packages)
        try:
            return await self._serve(request)
        finally:
            self.active_packages -= 1

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        queue = self.faults.get(request.path)
        fault = queue.popleft() if queue else None
        if fault is not None and fault.kind == "delay":
            self.delaying.set()
            await asyncio.sleep(fault.seconds)
            fault = None
        path = self._resolve(request)
        if fault is not None and fault.kind == "status":
            await self._record(request, fault.status, fault.kind)
            return web.Response(status=fault.status, headers=dict(fault.headers), text="injected\n")
        if path is None and request.path.endswith("/"):
            listing = autoindex_json(self.root, request.path)
            if listing is not None:
                await self._record(request, 200, None)
                return web.Response(body=listing, content_type="application/json")
        if path is None:
            await self._record(request, 404, None)
            return web.Response(status=404, text="not found\n")
        etag = _etag(path)
        if fault is None and self.supports_range and _if_range_holds(request, etag):
            await self._record(request, 206 if "Range" in request.headers else 200, None)
            return web.FileResponse(path)
        data = path.read_bytes()
        if fault is None or fault.kind == "ignore_range":
            await self._record(request, 200, fault.kind if fault else "full_body")
            return web.Response(body=data, headers={"ETag": etag})
        await self._record(request, 200, fault.kind)
        if fault.kind == "truncate":
            return web.Response(body=data[: fault.after], headers={"ETag": _etag(path)})
        if fault.kind == "corrupt":
            at = fault.after if fault.after >= 0 else len(data) // 2
            broken = bytearray(data)
            broken[at] ^= 0xFF
            return web.Response(body=bytes(broken), headers={"ETag": _etag(path)})
        response = web.StreamResponse(
            status=200, headers={"Content-Length": str(len(data)), "ETag": _etag(path)}
        )
        await response.prepare(request)
        await response.write(data[: fault.after])
        if fault.kind == "stall":
            self.stalled.set()
            await self.release_stalls.wait()
        transport = request.transport
        if transport is not None:
            transport.close()  # flush what was written, then end the connection early
        return response


def _if_range_holds(request: web.Request, etag: str) -> bool:
    """aiohttp's FileResponse only understands If-Range dates; compare entity tags here."""
    value = request.headers.get("If-Range")
    if value is None or not (value.startswith('"') or value.startswith("W/")):
        return True
    return value == etag


def _etag(path: Path) -> str:
    info = path.stat()
    return f'"{info.st_mtime_ns:x}-{info.st_size:x}"'


def autoindex_json(root: Path, url_path: str) -> bytes | None:
    """A directory as nginx's ``autoindex_format json`` lists it, or None if it is none."""
    directory = (root / url_path.lstrip("/")).resolve()
    if not directory.is_relative_to(root.resolve()) or not directory.is_dir():
        return None
    items: list[dict[str, object]] = []
    for entry in sorted(directory.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
        if entry.name.startswith("."):
            continue
        info = entry.stat()
        item: dict[str, object] = {
            "name": entry.name,
            "type": "directory" if entry.is_dir() else "file",
            "mtime": formatdate(info.st_mtime, usegmt=True),
        }
        if not entry.is_dir():
            item["size"] = info.st_size
        items.append(item)
    return json.dumps(items).encode()
