"""Messages between the daemon and its fetch worker processes: typed, one JSON line each.

    daemon -> worker   Hello (the first line), Limit, Job, Grant
    worker -> daemon   Want, Received, Done or Fail (one per Job, with its events), Log

Every message is a frozen dataclass. The ones that go back and forth for
every file (Job, Done, Received, Want, Grant) are JSON arrays: the ``TAG``,
then the fields in their declared order, nested dataclasses flattened
(``["job", 7, "v3.20", "main", "x86_64", "a.apk", "Q1...=", 512]``). The rare
ones are JSON objects: the ``TAG`` as ``"t"``, the fields as the other keys.
``decode`` checks every field against its declared type (the arrays with one
comparison of their element types, made once per kind; the objects with a
converter made once per type), so a malformed line is a
``WorkerProtocolError`` (a ValueError) at the boundary, never a KeyError
deep inside a job.

Errors cross the boundary as data (``ErrorData``) and come back as the same
MirrordError subclasses, so the daemon reports a failure from a worker
exactly like one from its own event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

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
from mirrord.fetch.tcppath import PathSample
from mirrord.storage.store import StoredObject


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
    fetch: FetchConfig  # with this worker's share of the connection limits
    connections: int  # download connections of the daemon and every worker: see tree_connections


@dataclass(frozen=True, slots=True)
class Limit:
    """The rate limit in force (``rate`` None: unlimited), sent at start and on change."""

    TAG: ClassVar[str] = "limit"
    rate: float | None
    burst: int  # the bucket's: with Hello.connections it bounds the receive buffers
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
class Ready:
    """The worker has imported its code and opened its origin client: jobs start at once."""

    TAG: ClassVar[str] = "ready"


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


@dataclass(frozen=True, slots=True)
class Log:
    """An event the worker logs: the daemon writes it, with ``worker=PID``, to its log."""

    TAG: ClassVar[str] = "log"
    level: str  # debug, info, warning or error
    event: str
    fields: dict[str, Any]  # JSON values


@dataclass(frozen=True, slots=True)
class PathSeen:
    """A new connection's round trip and window, for the daemon to judge."""

    TAG: ClassVar[str] = "path"
    sample: PathSample


Message = Hello | Limit | Job | Grant | Want | Ready | Received | Done | Fail | Log | PathSeen


def _job_row(job: Job) -> list[Any]:
    ref = job.ref
    return [Job.TAG, job.job_id, *job.key.parts, ref.filename, ref.checksum, ref.size]


def _job(
    job_id: int, branch: str, repo: str, arch: str, filename: str, checksum: str, size: int
) -> Job:
    return Job(job_id, ArchKey(branch, repo, arch), PackageRef(filename, checksum, size))


def _done_row(done: Done) -> list[Any]:
    stored, events = done.stored, done.events
    return [
        Done.TAG,
        done.job_id,
        stored.sha256,
        stored.size,
        events.received_bytes,
        events.retries,
        events.verify_failures,
        done.received,
    ]


def _done(
    job_id: int,
    sha256: str,
    size: int,
    received_bytes: int,
    retries: list[str],
    verify_failures: list[str],
    received: int,
) -> Done:
    events = JobEvents(received_bytes, tuple(retries), tuple(verify_failures))
    return Done(job_id, StoredObject(sha256, size), events, received)


@dataclass(frozen=True, slots=True)
class _Row:
    """The array form of a message kind: ``[TAG, field, ...]``, nested dataclasses flattened."""

    kind: type[Message]
    row: Callable[[Any], list[Any]]  # the message -> its array
    build: Callable[..., Message]  # the checked fields after the tag -> the message
    fields: tuple[tuple[str, type], ...]  # ("ref.size", int); ``list``: a list of strings
    types: tuple[type, ...]  # the type of each element, the tag's (str) first
    lists: tuple[int, ...]  # where the lists are, whose items must be strings too

    @classmethod
    def of(
        cls, kind: type[Message], row: Callable[[Any], list[Any]], build: Callable[..., Message]
    ) -> _Row:
        fields = tuple(_flat_fields(kind))
        types = (str, *(json_type for _, json_type in fields))
        lists = tuple(index for index, json_type in enumerate(types) if json_type is list)
        return cls(kind, row, build, fields, types, lists)

    def decode(self, data: list[Any], line: bytes) -> Message:
        if tuple(map(type, data)) != self.types or not all(
            type(item) is str for index in self.lists for item in data[index]
        ):
            raise WorkerProtocolError(self._mismatch(data), line)
        return self.build(*data[1:])

    def _mismatch(self, data: list[Any]) -> str:
        """What is wrong with an array that failed the check, named by the field."""
        tag = self.kind.TAG
        if len(data) != len(self.types):
            got, names = len(data) - 1, ", ".join(name for name, _ in self.fields)
            return f"{tag}: {got} values after the tag, expected {len(self.fields)} ({names})"
        for (name, json_type), value in zip(self.fields, data[1:], strict=True):
            if type(value) is not json_type:
                expected = "a list" if json_type is list else json_type.__name__
                return f"{tag}.{name}: expected {expected}, got {value!r}"
        for position in self.lists:
            name = self.fields[position - 1][0]
            for index, item in enumerate(data[position]):
                if type(item) is not str:
                    return f"{tag}.{name}[{index}]: expected str, got {item!r}"
        raise AssertionError("called on a row that fits")


def _flat_fields(kind: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """The name and JSON type of each field of ``kind``, nested dataclasses flattened."""
    hints = typing.get_type_hints(kind)
    for field in dataclasses.fields(kind):
        name, hint = prefix + field.name, hints[field.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from _flat_fields(hint, f"{name}.")
        elif hint is int or hint is str:
            yield name, hint
        elif hint == tuple[str, ...]:
            yield name, list
        else:
            raise TypeError(f"no array form for {kind.__name__}.{name}: {hint!r}")


_ROWS: dict[type[Message], _Row] = {
    row.kind: row
    for row in (
        _Row.of(Job, _job_row, _job),
        _Row.of(Done, _done_row, _done),
        _Row.of(Received, lambda rx: [Received.TAG, rx.nbytes], Received),
        _Row.of(Want, lambda want: [Want.TAG, want.request, want.nbytes], Want),
        _Row.of(Grant, lambda grant: [Grant.TAG, grant.request, grant.nbytes], Grant),
    )
}
_ROW_BY_TAG: dict[str, _Row] = {row.kind.TAG: row for row in _ROWS.values()}
_OBJECT_BY_TAG: dict[str, type[Message]] = {
    kind.TAG: kind for kind in typing.get_args(Message) if kind not in _ROWS
}


def encode(message: Message) -> bytes:
    row = _ROWS.get(type(message))
    data = row.row(message) if row is not None else {"t": message.TAG, **_as_dict(message)}
    return _ENCODER.encode(data).encode() + b"\n"


def _as_dict(value: Any) -> dict[str, Any]:
    """One level of a dataclass as a dict; json calls this again for nested ones."""
    names = _NAMES.get(type(value))
    if names is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            raise TypeError(f"{type(value).__name__} is not a wire value")
        names = _NAMES[type(value)] = tuple(field.name for field in dataclasses.fields(value))
    return {name: getattr(value, name) for name in names}


_NAMES: dict[type, tuple[str, ...]] = {}
# One encoder and one decoder for every line (json.dumps and json.loads with
# arguments build a new one per call; json.loads of bytes guesses their encoding).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_as_dict)
_DECODER = json.JSONDecoder()


def decode(line: bytes) -> Message:
    try:
        data = _DECODER.decode(line.decode())
    except ValueError as error:  # also UnicodeDecodeError
        raise WorkerProtocolError(f"not JSON ({error})", line) from None
    if type(data) is list:
        return _decode_row(data, line)
    if type(data) is not dict:
        raise WorkerProtocolError("not a JSON array or object", line)
    tag = data.pop("t", None)
    kind = _OBJECT_BY_TAG.get(tag) if type(tag) is str else None
    if kind is None:
        raise WorkerProtocolError(_unknown(tag, _ROW_BY_TAG, "an array"), line)
    try:
        message: Message = _converter(kind)(data)
    except _Mismatch as mismatch:
        raise WorkerProtocolError(f"{kind.TAG}{mismatch.path}: {mismatch.problem}", line) from None
    return message


def _decode_row(data: list[Any], line: bytes) -> Message:
    tag = data[0] if data else None
    row = _ROW_BY_TAG.get(tag) if type(tag) is str else None
    if row is None:
        raise WorkerProtocolError(_unknown(tag, _OBJECT_BY_TAG, "an object"), line)
    return row.decode(data, line)


def _unknown(tag: Any, other_form: dict[str, Any], other: str) -> str:
    sent_as = f" (sent as {other})" if type(tag) is str and tag in other_form else ""
    return f"unknown message tag {tag!r}{sent_as}"


class _Mismatch(Exception):
    """A value that does not fit its declared type, and where it was (``.ref.size``)."""

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path

    def under(self, step: str) -> _Mismatch:
        return _Mismatch(self.problem, step + self.path)


_Convert = Callable[[Any], Any]
_CONVERTERS: dict[Any, _Convert] = {}


def _converter(hint: Any) -> _Convert:
    """A function that checks a JSON value against ``hint`` and builds it, made once per type.

    Checking field by field through ``typing`` on every line cost tens of
    microseconds a message; the checks are the same, decided ahead.
    """
    convert = _CONVERTERS.get(hint)
    if convert is None:
        convert = _CONVERTERS[hint] = _make_converter(hint)
    return convert


def _make_converter(hint: Any) -> _Convert:
    """The types that messages and FetchConfig use: dataclasses, tuple[X, ...], X | None,
    float (an int is accepted), int, str, bool and dict[str, Any] (any JSON object)."""
    origin = typing.get_origin(hint)
    if origin is dict:
        return _json_object
    if origin is types.UnionType or origin is typing.Union:  # only ``X | None`` is used
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not types.NoneType]
        convert_inner = _converter(inner)
        return lambda value: None if value is None else convert_inner(value)
    if origin is tuple:  # tuple[X, ...]
        return _tuple_converter(_converter(typing.get_args(hint)[0]))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass_converter(hint)
    if hint is float:
        return _float
    if hint in (int, str, bool):
        return _exactly(hint)
    raise TypeError(f"no wire form for {hint!r}")


def _json_object(value: Any) -> dict[str, Any]:
    if type(value) is dict:
        return value
    raise _Mismatch(f"expected an object, got {value!r}")


def _float(value: Any) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise _Mismatch(f"expected float, got {value!r}")


def _exactly(kind: type) -> _Convert:
    def convert(value: Any) -> Any:
        if type(value) is kind:  # not isinstance: True is no int here
            return value
        raise _Mismatch(f"expected {kind.__name__}, got {value!r}")

    return convert


def _tuple_converter(convert_item: _Convert) -> _Convert:
    def convert(value: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _Mismatch(f"expected a list, got {value!r}")
        items = []
        for index, item in enumerate(value):
            try:
                items.append(convert_item(item))
            except _Mismatch as mismatch:
                raise mismatch.under(f"[{index}]") from None
        return tuple(items)

    return convert


def _dataclass_converter(kind: type) -> _Convert:
    hints = typing.get_type_hints(kind)
    fields = [
        (
            field.name,
            _converter(hints[field.name]),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(kind)
    ]
    names = frozenset(name for name, _, _ in fields)

    def convert(value: Any) -> Any:
        if type(value) is not dict:
            raise _Mismatch(f"expected an object, got {value!r}")
        if not names.issuperset(value):
            raise _Mismatch(f"unknown field {min(value.keys() - names)!r}")
        values: dict[str, Any] = {}
        for name, convert_field, required in fields:
            if name in value:
                try:
                    values[name] = convert_field(value[name])
                except _Mismatch as mismatch:
                    raise mismatch.under(f".{name}") from None
            elif required:
                raise _Mismatch(f"missing field {name!r}")
        return kind(**values)

    return convert


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


class Outbox:
    """Messages for one stream, written together once per turn of the event loop.

    A write (a syscall) per message was much of what a message cost on either
    side: jobs that end in the same turn, or start in it, now share one.
    Nothing waits: the lines go out as soon as the current turn is over.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._lines: list[bytes] = []

    def send(self, message: Message) -> None:
        if not self._lines:
            asyncio.get_running_loop().call_soon(self.flush)
        self._lines.append(encode(message))

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        # A closed stream (the peer died) drops them, as the peer would have.
        if lines and not self._writer.is_closing():
            self._writer.write(b"".join(lines))
