"""Control protocol v1: one JSON object per line each way. Pure: no I/O.

Request:  {"v": 1, "id": <any>, "cmd": "status", "args": {...}}
Response: {"v": 1, "id": <same>, "ok": true, "result": {...}}
       or {"v": 1, "id": <same>, "ok": false, "error": {"code": "...", "message": "..."}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mirrord.core.errors import ProtocolError
from mirrord.core.model import ArchKey
from mirrord.core.units import parse_rate

VERSION = 1
MAX_LINE = 64 * 1024

COMMANDS = (
    "status",
    "sync",
    "pause",
    "resume",
    "rate",
    "snapshots",
    "rollback",
    "publish",
    "verify",
    "gc",
    "reload",
    "drain",
    "purge",
)
MAX_PURGE_PATHS = 100


@dataclass(frozen=True)
class Request:
    cmd: str
    id: Any = None
    args: dict[str, Any] = field(default_factory=dict)

    def arches(self, key: str = "arches") -> list[ArchKey]:
        values = self.args.get(key) or []
        if not isinstance(values, list):
            raise ProtocolError(
                "bad_request", f"{self.cmd}: {key!r} must be a list of branch/repo/arch", self.id
            )
        return [_arch(value, self.id) for value in values]

    def arch(self, key: str = "arch") -> ArchKey:
        if key not in self.args:
            raise ProtocolError("bad_request", f"{self.cmd}: missing argument {key!r}", self.id)
        return _arch(self.args[key], self.id)

    def paths(self) -> tuple[str, ...]:
        """``purge``'s paths: relative to the published tree, no ``..``, no control characters."""
        values = self.args.get("paths")
        if not isinstance(values, list) or not 0 < len(values) <= MAX_PURGE_PATHS:
            raise ProtocolError(
                "bad_request", f"purge: 'paths' must list 1 to {MAX_PURGE_PATHS} paths", self.id
            )
        for value in values:
            if not _tree_path(value):
                raise ProtocolError(
                    "bad_request", f"purge: not a path in the published tree: {value!r}", self.id
                )
        return tuple(values)


def _tree_path(value: object) -> bool:
    if not isinstance(value, str) or not value or len(value) > 1024 or value.startswith("/"):
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return False
    return all(part not in (".", "..") for part in value.split("/"))


def _arch(value: object, request_id: Any) -> ArchKey:
    if not isinstance(value, str):
        raise ProtocolError("bad_request", f"expected branch/repo/arch, got {value!r}", request_id)
    try:
        return ArchKey.parse(value)
    except ValueError as error:
        raise ProtocolError("bad_request", str(error), request_id) from None


def parse_request(line: bytes) -> Request:
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError: JSONDecodeError, and numbers beyond int's digit limit;
        # RecursionError: nesting deeper than the decoder's stack
        raise ProtocolError("bad_request", f"not JSON: {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_request", "a request is a JSON object")
    request_id = data.get("id")
    version = data.get("v", VERSION)
    if version != VERSION:
        raise ProtocolError(
            "unsupported_version", f"protocol v{version} is not v{VERSION}", request_id
        )
    cmd = data.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError("bad_request", "missing 'cmd'", request_id)
    if cmd not in COMMANDS:
        raise ProtocolError(
            "unknown_command", f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})", request_id
        )
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("bad_request", "'args' must be an object", request_id)
    request = Request(cmd, request_id, args)
    _validate(request)
    return request


def _validate(request: Request) -> None:
    args = request.args
    if request.cmd in ("sync", "resume"):
        request.arches()
    elif request.cmd in ("snapshots", "publish"):
        request.arch()
    elif request.cmd == "rollback":
        request.arch()
        snapshot = args.get("snapshot")
        if isinstance(snapshot, bool) or not isinstance(snapshot, int):
            raise ProtocolError("bad_request", "rollback: 'snapshot' must be an id", request.id)
    elif request.cmd == "purge":
        request.paths()
    elif request.cmd == "rate" and args.get("value") is not None:
        value = args["value"]
        if value != "schedule":
            try:
                parse_rate(value)
            except (ValueError, TypeError) as error:
                raise ProtocolError("bad_request", f"rate: {error}", request.id) from None


def response(request_id: Any, result: Any) -> bytes:
    return _line({"v": VERSION, "id": request_id, "ok": True, "result": result})


def error_response(request_id: Any, code: str, message: str) -> bytes:
    return _line(
        {"v": VERSION, "id": request_id, "ok": False, "error": {"code": code, "message": message}}
    )


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode() + b"\n"


def request_line(cmd: str, args: dict[str, Any] | None = None, request_id: Any = 1) -> bytes:
    return _line({"v": VERSION, "id": request_id, "cmd": cmd, "args": args or {}})
