"""The daemon <-> fetch worker messages: every kind survives a round trip, bad lines are refused."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

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
from mirrord.fetch.wire import (
    Done,
    Fail,
    Grant,
    Hello,
    Job,
    Limit,
    Log,
    Message,
    Outbox,
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

KEY = ArchKey("v3.20", "main", "x86_64")
REF = PackageRef("busybox-1.36.1-r29.apk", "Q1abcdefghijklmnopqrstuvwxyz0=", 512_345)
SHA = "ab" * 32
EVENTS = JobEvents(4096, ("network", "verification"), ("checksum",))
SCHEDULE = (ScheduleWindow(0, 360, None), ScheduleWindow(360, 1440, 2.5e6))

MESSAGES: list[Message] = [
    Hello("https://origin.test/alpine", "/srv/mirrord", "info", FetchConfig()),
    Hello(
        "http://127.0.0.1:8080",
        "/tmp/store",
        "debug",
        FetchConfig(concurrency=3, rate_limit=1e6, burst=65536, schedule=SCHEDULE, processes=4),
    ),
    Limit(rate=None, burst=4 << 20, chunk=1 << 18),
    Limit(rate=12.5e6, burst=1 << 20, chunk=16 << 10),
    Job(7, KEY, REF),
    Grant(3, 262_144),
    Want(3, 262_144),
    Ready(),
    Received(1_000_000),
    Done(7, StoredObject(SHA, REF.size), EVENTS),
    Done(8, StoredObject(SHA, 0), JobEvents()),
    Done(10, StoredObject(SHA, REF.size), EVENTS, received=REF.size),
    Fail(11, error_to_wire(StoreError("/srv", "gone")), JobEvents(), received=1),
    Fail(9, error_to_wire(StoreError("/srv/mirrord/objects", "disk full")), EVENTS),
    Log("warning", "fetch.package.verify_failed", {"attempt": 1, "what": "size", "x": None}),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip(message: Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["t"] == message.TAG
    assert decode(line) == message


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


GOOD_JOB = {"job_id": 7, "key": {"branch": "v3.20", "repo": "main", "arch": "x86_64"}}
GOOD_REF = {"filename": "a.apk", "checksum": "Q1x=", "size": 10}


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"", "not JSON"),
        (b"{not json\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (_line(n=5), "unknown message tag None"),
        (_line(t="jobs", **GOOD_JOB, ref=GOOD_REF), "unknown message tag 'jobs'"),
        (_line(t=3, nbytes=5), "unknown message tag 3"),
        (_line(t="rx"), "rx: missing field 'nbytes'"),
        (_line(t="job", **GOOD_JOB), "job: missing field 'ref'"),
        (_line(t="job", **GOOD_JOB, ref={"filename": "a.apk", "size": 1}), "'checksum'"),
        (_line(t="rx", nbytes="5"), "rx.nbytes: expected int, got '5'"),
        (_line(t="rx", nbytes=5.0), "rx.nbytes: expected int"),
        (_line(t="rx", nbytes=True), "rx.nbytes: expected int"),
        (_line(t="rx", nbytes=None), "rx.nbytes: expected int"),
        (_line(t="rx", nbytes=5, n=5), "rx: unknown field 'n'"),
        (_line(t="limit", rate="fast", burst=1, chunk=1), "limit.rate: expected float"),
        (_line(t="job", job_id=7, key="v3.20/main/x86_64", ref=GOOD_REF), "job.key: expected"),
        (
            _line(t="job", **GOOD_JOB, ref={**GOOD_REF, "size": "10"}),
            "job.ref.size: expected int",
        ),
        (
            _line(
                t="done",
                job_id=1,
                stored={"sha256": SHA, "size": 1},
                events={"received_bytes": 1, "retries": "network"},
            ),
            "done.events.retries: expected a list",
        ),
        (
            _line(
                t="done",
                job_id=1,
                stored={"sha256": SHA, "size": 1},
                events={"received_bytes": 1, "retries": ["network", 5]},
            ),
            "done.events.retries[1]: expected str",
        ),
    ],
)
def test_malformed_lines_are_refused_with_the_reason(line: bytes, complaint: str) -> None:
    with pytest.raises(WorkerProtocolError) as caught:
        decode(line)
    assert complaint in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the pool treats ValueError as a protocol error


def test_fields_with_defaults_may_be_left_out() -> None:
    line = _line(t="done", job_id=1, stored={"sha256": SHA, "size": 1}, events={})
    assert decode(line) == Done(1, StoredObject(SHA, 1), JobEvents())


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
