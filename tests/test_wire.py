"""The daemon <-> fetch worker messages: every kind survives a round trip, bad lines are refused."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrord.core.config import FetchConfig, ScheduleWindow
from mirrord.core.errors import (
    InternalError,
    MirrordError,
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
from mirrord.fetch.wire import (
    Done,
    ErrorData,
    Fail,
    Grant,
    Hello,
    Job,
    Limit,
    Log,
    Message,
    Outbox,
    PathSeen,
    Ready,
    Received,
    Want,
    decode,
    encode,
    error_from_wire,
    error_to_wire,
)
from mirrord.fetch.workerpool import worker_hello
from mirrord.storage.store import StoredObject
from tests.helpers import make_config, repositories
from tests.test_fuzz import FUZZ

KEY = ArchKey("v3.20", "main", "x86_64")
REF = PackageRef("busybox-1.36.1-r29.apk", "Q1abcdefghijklmnopqrstuvwxyz0=", 512_345)
SHA = "ab" * 32
EVENTS = JobEvents(4096, ("network", "verification"), ("checksum",))
SCHEDULE = (ScheduleWindow(0, 360, None), ScheduleWindow(360, 1440, 2.5e6))

MESSAGES: list[Message] = [
    Hello("https://origin.test/alpine", "/srv/mirrord", "info", FetchConfig(), 16),
    Hello(
        "http://127.0.0.1:8080",
        "/tmp/store",
        "debug",
        FetchConfig(concurrency=3, rate_limit=1e6, burst=65536, schedule=SCHEDULE, processes=4),
        7,
    ),
    Limit(rate=None, burst=4 << 20, chunk=1 << 18),
    Limit(rate=12.5e6, burst=1 << 20, chunk=16 << 10),
    Job(7, KEY, REF),
    Job(0, ArchKey("edge", "testing", "riscv64"), PackageRef('a "b"\\c\n\u00e9\u2603.apk', "", 0)),
    Grant(3, 262_144),
    Want(3, 262_144),
    Ready(),
    Received(1_000_000),
    Done(7, StoredObject(SHA, REF.size), EVENTS),
    Done(8, StoredObject(SHA, 0), JobEvents()),
    Done(10, StoredObject(SHA, REF.size), EVENTS, received=REF.size),
    Done(12, StoredObject("apk:" + SHA, 3), JobEvents(0, (), ("size", "checksum")), 1 << 40),
    Fail(11, error_to_wire(StoreError("/srv", "gone")), JobEvents(), received=1),
    Fail(9, error_to_wire(StoreError("/srv/mirrord/objects", "disk full")), EVENTS),
    Log("warning", "fetch.package.verify_failed", {"attempt": 1, "what": "size", "x": None}),
    PathSeen(PathSample(0.0804, 40_960, True)),
    PathSeen(PathSample(2e-05, 6_291_456, False)),
]


ARRAY_KINDS: set[type[Message]] = {
    Job,
    Done,
    Received,
    Want,
    Grant,
}  # one or two a file: the short form


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip(message: Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = json.loads(line)
    if type(message) in ARRAY_KINDS:
        assert type(data) is list and data[0] == message.TAG
    else:
        assert type(data) is dict and data["t"] == message.TAG
    assert decode(line) == message


def _flat(value: Any) -> Iterator[Any]:
    """A dataclass's fields in declared order, nested ones flattened, tuples as lists."""
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if dataclasses.is_dataclass(item):
            yield from _flat(item)
        else:
            yield list(item) if isinstance(item, tuple) else item


# every field a different value, so that no two can trade places unseen
IN_ORDER: list[Message] = [
    Job(7, KEY, REF),
    Done(7, StoredObject(SHA, 10), EVENTS, received=3),
    Done(8, StoredObject(SHA, 10), JobEvents(5, ("network",), ()), received=3),
    Want(1, 2),
    Grant(1, 2),
]


@pytest.mark.parametrize("message", IN_ORDER, ids=lambda m: type(m).__name__)
def test_a_per_file_message_is_an_array_of_its_tag_and_its_fields_in_order(
    message: Message,
) -> None:
    assert json.loads(encode(message)) == [message.TAG, *_flat(message)]
    assert decode(encode(message)) == message


def test_the_per_file_messages_byte_for_byte() -> None:
    assert encode(Job(7, KEY, REF)) == (
        b'["job",7,"v3.20","main","x86_64","busybox-1.36.1-r29.apk",'
        b'"Q1abcdefghijklmnopqrstuvwxyz0=",512345]\n'
    )
    assert encode(Done(7, StoredObject(SHA, 10), EVENTS, received=3)) == (
        b'["done",7,"' + SHA.encode() + b'",10,4096,["network","verification"],["checksum"],3]\n'
    )
    assert encode(Done(8, StoredObject(SHA, 0), JobEvents())) == (
        b'["done",8,"' + SHA.encode() + b'",0,0,[],[],0]\n'
    )
    assert encode(Received(5)) == b'["rx",5]\n'
    assert encode(Want(1, 2)) == b'["want",1,2]\n'
    assert encode(Grant(1, 2)) == b'["grant",1,2]\n'


def test_every_message_kind_is_covered() -> None:
    assert {type(m) for m in MESSAGES} == {
        Hello,
        Limit,
        Job,
        Grant,
        Want,
        Ready,
        Received,
        Done,
        Fail,
        Log,
        PathSeen,
    }


ERRORS: list[MirrordError] = [
    PackageFormatError(REF.filename, "not gzip"),
    PackageVerifyError(REF.filename, "checksum (C:)", "Q1aaa=", "Q1bbb="),
    TransientOriginError("https://origin.test/x.apk", "HTTP 503", 503, 2.5),
    TransientOriginError("https://origin.test/x.apk", "server disconnected"),
    PermanentOriginError("https://origin.test/x.apk", "HTTP 404 Not Found", 404),
    StoreError("/srv/mirrord/objects", "cannot write a temp file: No space left on device"),
    ShuttingDownError(),
    InternalError("busybox.apk: KeyError('x')"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_come_back_as_the_same_class_with_the_same_data(error: MirrordError) -> None:
    back = decode(encode(Fail(1, error_to_wire(error), JobEvents())))
    assert isinstance(back, Fail)
    again = error_from_wire(back.error)
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)


def test_an_error_the_daemon_does_not_know_becomes_an_internal_error() -> None:
    again = error_from_wire(error_to_wire(MirrordError("something odd")))
    assert type(again) is InternalError and str(again) == "something odd"


def test_the_hello_gives_each_worker_its_share_of_the_connections(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        "http://127.0.0.1:9/",
        tmp_path / "keys",
        repositories(KEY),
        fetch={
            "processes": 3,
            "concurrency": 16,
            "per_host": 2,
            "schedule": {"00:00-06:00": "unlimited", "06:00-24:00": "2MB/s"},
        },
    )
    hello = worker_hello(config)
    assert (hello.fetch.concurrency, hello.fetch.per_host) == (6, 1)
    assert hello.fetch.read_timeout == config.fetch.read_timeout
    assert hello.storage == str(config.storage.path)
    assert decode(encode(hello)) == hello


def _line(**data: object) -> bytes:
    return json.dumps(data).encode() + b"\n"


def _row(*data: object) -> bytes:
    return json.dumps(data).encode() + b"\n"


GOOD_JOB = {"job_id": 7, "key": {"branch": "v3.20", "repo": "main", "arch": "x86_64"}}
GOOD_REF = {"filename": "a.apk", "checksum": "Q1x=", "size": 10}
KEY_ROW = ("v3.20", "main", "x86_64")
REF_ROW = ("a.apk", "Q1x=", 10)
JOB_ROW = ("job", 7, *KEY_ROW, *REF_ROW)
DONE_ROW = ("done", 1, SHA, 10, 10, ["network"], ["size"], 0)


def _with(row: tuple[object, ...], position: int, value: object) -> bytes:
    """``row`` with the element at ``position`` (the tag is 0) replaced."""
    return _row(*row[:position], value, *row[position + 1 :])


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"", "not JSON"),
        (b"{not json\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (_row(*JOB_ROW)[:-1] + b" x\n", "not JSON"),
        (b'"job"\n', "not a JSON array or object"),
        (b"7\n", "not a JSON array or object"),
        (b"null\n", "not a JSON array or object"),
        (b"[1, 2]\n", "unknown message tag 1"),
        (b"[]\n", "unknown message tag None"),
        (_row(["job"], *JOB_ROW[1:]), "unknown message tag ['job']"),
        (_row({"t": "job"}, 7), "unknown message tag {'t': 'job'}"),
        (_row("jobs", *JOB_ROW[1:]), "unknown message tag 'jobs'"),
        (_row("hello", "https://o", "/srv", "info", {}), "'hello' (sent as an object)"),
        (_row("ready"), "unknown message tag 'ready' (sent as an object)"),
        (_line(n=5), "unknown message tag None"),
        (_line(t="jobs", **GOOD_JOB, ref=GOOD_REF), "unknown message tag 'jobs'"),
        (_line(t=3, nbytes=5), "unknown message tag 3"),
        (_line(t=["rx"], nbytes=5), "unknown message tag ['rx']"),
        (_line(t="job", **GOOD_JOB, ref=GOOD_REF), "'job' (sent as an array)"),
        (_line(t="rx", nbytes=5), "unknown message tag 'rx' (sent as an array)"),
        (
            _line(t="done", job_id=1, stored={"sha256": SHA, "size": 1}, events={}),
            "unknown message tag 'done' (sent as an array)",
        ),
        # wrong arity: every field of an array is there, in its place
        (_row("rx"), "rx: 0 values after the tag, expected 1 (nbytes)"),
        (_row("rx", 5, 5), "rx: 2 values after the tag, expected 1 (nbytes)"),
        (_row("want", 1), "want: 1 values after the tag, expected 2 (request, nbytes)"),
        (_row("grant", 1, 2, 3), "grant: 3 values after the tag, expected 2 (request, nbytes)"),
        (
            _row("job", 7, *KEY_ROW),
            "job: 4 values after the tag, expected 7 (job_id, key.branch, key.repo, key.arch, "
            "ref.filename, ref.checksum, ref.size)",
        ),
        (_row("job", 7, *KEY_ROW, "a.apk", 10), "job: 6 values after the tag, expected 7"),
        (_row(*JOB_ROW, 0), "job: 8 values after the tag, expected 7"),
        (_row("job", 7, "v3.20/main/x86_64", *REF_ROW), "job: 5 values after the tag"),
        (
            _row("job", 7, dict(zip(("branch", "repo", "arch"), KEY_ROW, strict=True)), *REF_ROW),
            "job: 5 values after the tag",
        ),
        (
            _row(*DONE_ROW[:-1]),
            "done: 6 values after the tag, expected 7 (job_id, stored.sha256, stored.size, "
            "events.received_bytes, events.retries, events.verify_failures, received)",
        ),
        (_row(*DONE_ROW, 0), "done: 8 values after the tag, expected 7"),
        (_row("done", 1, SHA, 10, 10, ["network", "size"], 0), "done: 6 values after the tag"),
        # wrong types, each named by its field
        (_row("rx", "5"), "rx.nbytes: expected int, got '5'"),
        (_row("rx", 5.0), "rx.nbytes: expected int, got 5.0"),
        (_row("rx", True), "rx.nbytes: expected int, got True"),
        (_row("rx", None), "rx.nbytes: expected int, got None"),
        (_row("rx", [5]), "rx.nbytes: expected int, got [5]"),
        (_row("want", False, 1), "want.request: expected int, got False"),
        (_row("want", 1, 1.5), "want.nbytes: expected int, got 1.5"),
        (_row("grant", "1", 1), "grant.request: expected int, got '1'"),
        (_row("grant", 1, True), "grant.nbytes: expected int, got True"),
        (_with(JOB_ROW, 1, True), "job.job_id: expected int, got True"),
        (_with(JOB_ROW, 1, "7"), "job.job_id: expected int, got '7'"),
        (_with(JOB_ROW, 2, ["v3.20"]), "job.key.branch: expected str, got ['v3.20']"),
        (_with(JOB_ROW, 3, None), "job.key.repo: expected str, got None"),
        (_with(JOB_ROW, 4, 64), "job.key.arch: expected str, got 64"),
        (_with(JOB_ROW, 5, {"filename": "a.apk"}), "job.ref.filename: expected str"),
        (_with(JOB_ROW, 6, False), "job.ref.checksum: expected str, got False"),
        (_with(JOB_ROW, 7, "10"), "job.ref.size: expected int, got '10'"),
        (_with(JOB_ROW, 7, 10.0), "job.ref.size: expected int, got 10.0"),
        (_with(JOB_ROW, 7, True), "job.ref.size: expected int, got True"),
        (_with(DONE_ROW, 1, None), "done.job_id: expected int, got None"),
        (_with(DONE_ROW, 2, 7), "done.stored.sha256: expected str, got 7"),
        (_with(DONE_ROW, 3, False), "done.stored.size: expected int, got False"),
        (_with(DONE_ROW, 4, 1e3), "done.events.received_bytes: expected int, got 1000.0"),
        (_with(DONE_ROW, 5, "network"), "done.events.retries: expected a list, got 'network'"),
        (_with(DONE_ROW, 5, None), "done.events.retries: expected a list, got None"),
        (_with(DONE_ROW, 5, ["network", 5]), "done.events.retries[1]: expected str, got 5"),
        (_with(DONE_ROW, 5, [["network"]]), "done.events.retries[0]: expected str"),
        (_with(DONE_ROW, 6, {"size": 1}), "done.events.verify_failures: expected a list"),
        (_with(DONE_ROW, 6, [None]), "done.events.verify_failures[0]: expected str, got None"),
        (_with(DONE_ROW, 7, True), "done.received: expected int, got True"),
        (_with(DONE_ROW, 7, "0"), "done.received: expected int, got '0'"),
        # the rare messages, still objects
        (_line(t="limit", rate=None, burst=1, chunk=1, n=5), "limit: unknown field 'n'"),
        (_line(t="limit", rate=None, burst=1), "limit: missing field 'chunk'"),
        (_line(t="limit", rate="fast", burst=1, chunk=1), "limit.rate: expected float"),
        (_line(t="limit", rate=None, burst=True, chunk=1), "limit.burst: expected int, got True"),
        (
            _line(t="fail", job_id=1, error={"kind": "StoreError"}, events={}),
            "fail.error: missing field 'message'",
        ),
        (
            _line(t="fail", job_id=1, error={"kind": "X", "message": ""}, events={"retries": "x"}),
            "fail.events.retries: expected a list",
        ),
        (
            _line(t="fail", job_id=1, error={"kind": "X", "message": ""}, events={"retries": [5]}),
            "fail.events.retries[0]: expected str",
        ),
        (_line(t="log", level="info", event="x", fields=[]), "log.fields: expected an object"),
    ],
)
def test_malformed_lines_are_refused_with_the_reason(line: bytes, complaint: str) -> None:
    with pytest.raises(WorkerProtocolError) as caught:
        decode(line)
    assert complaint in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the pool treats ValueError as a protocol error


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@st.composite
def arrays(draw: st.DrawFn) -> list[Any]:
    """A per-file message's array, then maybe an element replaced, dropped or added."""
    message = draw(st.sampled_from([m for m in MESSAGES if type(m) in ARRAY_KINDS]))
    data: list[Any] = json.loads(encode(message))
    for _ in range(draw(st.integers(0, 2))):
        position = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["replace", "drop", "add"])):
            case "replace" if position < len(data):
                data[position] = draw(JSON_VALUES)
            case "drop" if position < len(data):
                del data[position]
            case _:
                data.insert(position, draw(JSON_VALUES))
    return data


@FUZZ  # the same examples on every run, however slow the machine
@given(arrays())
def test_any_array_either_decodes_to_what_it_says_or_is_refused(data: list[Any]) -> None:
    try:
        message = decode(_row(*data))
    except WorkerProtocolError:
        return
    assert json.loads(encode(message)) == data


def test_fields_with_defaults_may_be_left_out_of_an_object() -> None:
    line = _line(t="fail", job_id=1, error={"kind": "StoreError", "message": "x"}, events={})
    assert decode(line) == Fail(1, ErrorData("StoreError", "x"), JobEvents())


async def test_an_outbox_writes_the_messages_of_one_turn_together_and_in_order() -> None:
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
    outbox = Outbox(writer)
    sent: list[Message] = [Job(1, KEY, REF), Grant(3, 5), Job(2, KEY, REF)]
    for message in sent:
        outbox.send(message)
    with pytest.raises(BlockingIOError):  # nothing written within the turn
        theirs.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    expected = b"".join(map(encode, sent))
    assert await peer_reader.readexactly(len(expected)) == expected
    outbox.send(Received(7))
    outbox.flush()  # before a close: nothing left behind
    writer.close()
    assert await peer_reader.read() == encode(Received(7))
    peer_writer.close()
