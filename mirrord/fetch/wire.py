"""Messages between the daemon and its fetch worker processes: JSON lines.

Errors cross the boundary as data and come back as the same MirrordError
subclasses, so the daemon reports a failure from a worker exactly like one
from its own event loop.
"""

from __future__ import annotations

import json
from typing import Any

from mirrord.core.errors import (
    InternalError,
    MirrordError,
    OriginError,
    PackageFormatError,
    PackageVerifyError,
    PermanentOriginError,
    ShuttingDownError,
    StoreError,
    TransientOriginError,
)

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    message = json.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ValueError(f"not a message: {line[:80]!r}")
    return message


def error_to_wire(error: MirrordError) -> Message:
    data: Message = {"kind": type(error).__name__, "message": str(error)}
    if isinstance(error, PackageFormatError):
        data.update(filename=error.filename, reason=error.reason)
    elif isinstance(error, PackageVerifyError):
        data.update(
            filename=error.filename, what=error.what, expected=error.expected, actual=error.actual
        )
    elif isinstance(error, OriginError):
        data.update(url=error.url, reason=error.reason, status=error.status)
        if isinstance(error, TransientOriginError):
            data["retry_after"] = error.retry_after
    elif isinstance(error, StoreError):
        data.update(path=error.path, reason=error.reason)
    return data


def error_from_wire(data: Message) -> MirrordError:
    kind = data.get("kind")
    try:
        if kind == "PackageFormatError":
            return PackageFormatError(data["filename"], data["reason"])
        if kind == "PackageVerifyError":
            return PackageVerifyError(
                data["filename"], data["what"], data["expected"], data["actual"]
            )
        if kind == "TransientOriginError":
            return TransientOriginError(
                data["url"], data["reason"], data.get("status"), data.get("retry_after")
            )
        if kind == "PermanentOriginError":
            return PermanentOriginError(data["url"], data["reason"], data.get("status"))
        if kind == "StoreError":
            return StoreError(data["path"], data["reason"])
        if kind == "ShuttingDownError":
            return ShuttingDownError()
    except KeyError:
        pass
    return InternalError(str(data.get("message", "fetch worker failed")))
