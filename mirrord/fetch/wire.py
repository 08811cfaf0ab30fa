"""Messages between the daemon and its fetch worker processes: typed, one JSON line each.

    daemon -> worker   Hello (the first line), Limit, Job, Grant
    worker -> daemon   Want, Received, Done or Fail (one per Job, with its events)

Every message is a frozen dataclass; its ``TAG`` goes on the wire as ``"t"``
and its fields as the other keys. ``decode`` checks each field against its
declared type, so a malformed line is a ``WorkerProtocolError`` (a
ValueError) at the boundary, never a KeyError deep inside a job.

Errors cross the boundary as data (``ErrorData``) and come back as the same
MirrordError subclasses, so the daemon reports a failure from a worker
exactly like one from its own event loop.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from mirrord.core.config import FetchConfig
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
    WorkerProtocolError,
)
from mirrord.core.model import ArchKey, PackageRef
from mirrord.fetch.events import JobEvents
from mirrord.storage.store import StoredObject

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ErrorData:
    """A MirrordError as data: its class, its message and the fields its class carries."""

    kind: str
    message: str
    filename: str = ""
    reason: str = ""
    what: str = ""
    expected: str = ""
    actual: str = ""
    url: str = ""
    path: str = ""
    status: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Hello:
    """What a worker needs to run: where to fetch from and store to, how, how to log."""

    TAG: ClassVar[str] = "hello"
    origin: str
    storage: str
    log_level: str
    log_format: str
    fetch: FetchConfig  # with this worker's share of the connection limits


@dataclass(frozen=True, slots=True)
class Limit:
    """The rate limit in force (``rate`` None: unlimited), sent at start and on change."""

    TAG: ClassVar[str] = "limit"
    rate: float | None
    burst: int  # this worker's share of the bucket, which bounds its receive buffers
    chunk: int  # tokens to ask for at a time


@dataclass(frozen=True, slots=True)
class Job:
    TAG: ClassVar[str] = "job"
    job_id: int
    key: ArchKey
    ref: PackageRef


@dataclass(frozen=True, slots=True)
class Grant:
    """Tokens from the daemon's bucket, answering the worker's Want of the same request."""

    TAG: ClassVar[str] = "grant"
    request: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Want:
    TAG: ClassVar[str] = "want"
    request: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Received:
    """Bytes received since the last report, for the daemon's rate meter."""

    TAG: ClassVar[str] = "rx"
    nbytes: int


@dataclass(frozen=True, slots=True)
class Done:
    TAG: ClassVar[str] = "done"
    job_id: int
    stored: StoredObject
    events: JobEvents
    received: int = 0  # the worker's bytes not yet reported (a Received folded in)


@dataclass(frozen=True, slots=True)
class Fail:
    TAG: ClassVar[str] = "fail"
    job_id: int
    error: ErrorData
    events: JobEvents
    received: int = 0


Message = Hello | Limit | Job | Grant | Want | Received | Done | Fail
_BY_TAG: dict[str, type[Message]] = {kind.TAG: kind for kind in typing.get_args(Message)}


def encode(message: Message) -> bytes:
    line = {"t": message.TAG, **_plain(message)}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copies: messages hold only immutable values."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value):
        return {name: _plain(getattr(value, name)) for name, _, _ in _fields(type(value))}
    return value


def decode(line: bytes) -> Message:
    try:
        data = json.loads(line)
    except ValueError as error:  # also UnicodeDecodeError
        raise WorkerProtocolError(f"not JSON ({error})", line) from None
    if not isinstance(data, dict):
        raise WorkerProtocolError("not a JSON object", line)
    tag = data.pop("t", None)
    kind = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if kind is None:
        raise WorkerProtocolError(f"unknown message tag {tag!r}", line)
    try:
        return _from_json(kind, data, kind.TAG)
    except _Mismatch as mismatch:
        raise WorkerProtocolError(str(mismatch), line) from None


class _Mismatch(Exception):
    """A value that does not fit its declared type; the message says where."""


_Field = tuple[str, Any, bool]  # name, type, required
_FIELDS: dict[Any, tuple[_Field, ...]] = {}


def _fields(kind: Any) -> tuple[_Field, ...]:
    """The fields of a dataclass, their types resolved from the annotations (once)."""
    fields = _FIELDS.get(kind)
    if fields is None:
        hints = typing.get_type_hints(kind)
        fields = _FIELDS[kind] = tuple(
            (
                field.name,
                hints[field.name],
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING,
            )
            for field in dataclasses.fields(kind)
        )
    return fields


def _from_json(kind: type[T], data: dict[str, Any], where: str) -> T:
    fields = _fields(kind)
    unknown = data.keys() - {name for name, _, _ in fields}
    if unknown:
        raise _Mismatch(f"{where}: unknown field {min(unknown)!r}")
    values: dict[str, Any] = {}
    for name, hint, required in fields:
        if name in data:
            values[name] = _value(data[name], hint, f"{where}.{name}")
        elif required:
            raise _Mismatch(f"{where}: missing field {name!r}")
    return kind(**values)


def _value(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the declared type: the types that messages and FetchConfig use."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:  # only ``X | None`` is used
        if value is None:
            return None
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not types.NoneType]
        return _value(value, inner, where)
    if origin is tuple:  # tuple[X, ...]
        if not isinstance(value, list):
            raise _Mismatch(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_value(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _Mismatch(f"{where}: expected an object, got {value!r}")
        return _from_json(hint, value, where)
    if hint is float and type(value) in (int, float):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise _Mismatch(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def error_to_wire(error: MirrordError) -> ErrorData:
    kind, message = type(error).__name__, str(error)
    if isinstance(error, PackageFormatError):
        return ErrorData(kind, message, filename=error.filename, reason=error.reason)
    if isinstance(error, PackageVerifyError):
        return ErrorData(
            kind,
            message,
            filename=error.filename,
            what=error.what,
            expected=error.expected,
            actual=error.actual,
        )
    if isinstance(error, TransientOriginError):
        return ErrorData(
            kind,
            message,
            url=error.url,
            reason=error.reason,
            status=error.status,
            retry_after=error.retry_after,
        )
    if isinstance(error, OriginError):
        return ErrorData(kind, message, url=error.url, reason=error.reason, status=error.status)
    if isinstance(error, StoreError):
        return ErrorData(kind, message, path=error.path, reason=error.reason)
    return ErrorData(kind, message)


def error_from_wire(data: ErrorData) -> MirrordError:
    match data.kind:
        case "PackageFormatError":
            return PackageFormatError(data.filename, data.reason)
        case "PackageVerifyError":
            return PackageVerifyError(data.filename, data.what, data.expected, data.actual)
        case "TransientOriginError":
            return TransientOriginError(data.url, data.reason, data.status, data.retry_after)
        case "PermanentOriginError":
            return PermanentOriginError(data.url, data.reason, data.status)
        case "StoreError":
            return StoreError(data.path, data.reason)
        case "ShuttingDownError":
            return ShuttingDownError()
    return InternalError(data.message)
