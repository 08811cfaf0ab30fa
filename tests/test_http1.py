"""The origin's HTTP/1.1 client against real servers: aiohttp, nginx, raw sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from mirrord.core.aio import run_async
from mirrord.core.config import FetchConfig
from mirrord.core.errors import PermanentOriginError, TransientOriginError
from mirrord.fetch.bodies import DownloadClient, DownloadStart
from mirrord.fetch.http1 import READ_SIZE, SMALL_READ, buffer_unshared, parse_head
from mirrord.fetch.httpstatus import MAX_RECEIVE_BUFFER, limited_segment
from mirrord.fetch.origin import OriginClient
from mirrord.fetch.pool import ConnectionPool
from mirrord.fetch.pool import _split as pool_split
from mirrord.fetch.tcppath import PathSample
from tests.helpers import LogCapture
from tests.nginx import CONFIG, Nginx

BLOB = os.urandom(700_000)  # several reads, so a body spans buffers
FETCH = FetchConfig(concurrency=2, per_host=2, connect_timeout=2.0, read_timeout=2.0)


async def fetch(
    client: DownloadClient, path: str, offset: int = 0, if_range: str | None = None
) -> tuple[DownloadStart, bytes]:
    async with client.open_body(
        client.path_url(path), offset=offset, if_range=if_range, now=0.0
    ) as (start, body):
        received = bytearray()
        async for chunk in body.chunks():
            received += chunk
        return start, bytes(received)


@asynccontextmanager
async def aiohttp_origin(peers: list[object]) -> AsyncIterator[str]:
    """A real aiohttp server: /blob (Content-Length), /chunked, /moved -> /blob, /gone."""

    async def blob(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(body=BLOB, headers={"ETag": '"v1"'})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for at in range(0, len(BLOB), 100_003):
            await response.write(BLOB[at : at + 100_003])
        await response.write_eof()
        return response

    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/blob")

    async def gone(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, headers={"Retry-After": "7"})

    async def small(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(body=BLOB[:2000])

    app = web.Application()
    app.router.add_get("/blob", blob)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/moved", moved)
    app.router.add_get("/gone", gone)
    app.router.add_get("/small", small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_origin(handler: Handler) -> AsyncIterator[str]:
    """A socket server that answers with whatever bytes ``handler`` writes."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def each_request(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request head the client sends, until it closes the connection."""
    while True:
        try:
            yield await read_request(reader)
        except asyncio.IncompleteReadError:
            return


async def test_bodies_by_length_chunked_and_redirect_over_kept_alive_connections() -> None:
    peers: list[object] = []
    async with aiohttp_origin(peers) as url, DownloadClient.open(url, FETCH) as client:
        for _ in range(3):
            start, data = await fetch(client, "blob")
            assert hashlib.sha256(data).digest() == hashlib.sha256(BLOB).digest()
            assert (start.offset, start.length, start.validator) == (0, len(BLOB), '"v1"')
        assert len(set(peers)) == 1  # one connection, kept alive
        start, data = await fetch(client, "chunked")
        assert data == BLOB and start.length is None
        start, data = await fetch(client, "moved")
        assert data == BLOB


async def test_a_status_maps_into_the_error_tree_with_retry_after() -> None:
    async with aiohttp_origin([]) as url, DownloadClient.open(url, FETCH) as client:
        with pytest.raises(TransientOriginError) as caught:
            await fetch(client, "gone")
        assert (caught.value.status, caught.value.retry_after) == (503, 7.0)
        with pytest.raises(PermanentOriginError) as missing:
            await fetch(client, "nothing-here")
        assert missing.value.status == 404
        assert str(missing.value) == f"{url}/nothing-here: HTTP 404 Not Found"


async def test_a_resume_from_nginx_is_a_206_at_the_offset(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "blob").write_bytes(BLOB)
    with Nginx(root, tmp_path / "nginx") as nginx:
        async with DownloadClient.open(nginx.url, FETCH) as client:
            whole, data = await fetch(client, "blob")
            assert data == BLOB
            start, rest = await fetch(client, "blob", 500_000, whole.validator)
            assert (start.offset, start.length, rest) == (500_000, 200_000, BLOB[500_000:])
            stale, again = await fetch(client, "blob", 500_000, '"not-it"')
            assert (stale.offset, again) == (0, BLOB)  # If-Range failed: the whole body


async def test_a_pooled_connection_the_server_closed_is_retried_on_a_fresh_one() -> None:
    connections = 0

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()
        await read_request(reader)  # keep-alive promised, but the next request ends it
        writer.close()

    async with raw_origin(once_then_close) as url, DownloadClient.open(url, FETCH) as client:
        assert (await fetch(client, "a"))[1] == b"hello"
        assert (await fetch(client, "b"))[1] == b"hello"
    assert connections == 2


async def test_a_body_cut_short_is_transient() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    async with raw_origin(short) as url, DownloadClient.open(url, FETCH) as client:
        with pytest.raises(TransientOriginError) as caught:
            await fetch(client, "a")
    assert caught.value.reason == "body cut short: connection closed awaiting 990 more bytes"


async def test_a_chunked_body_cut_short_is_transient() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()

    async with raw_origin(short) as url, DownloadClient.open(url, FETCH) as client:
        with pytest.raises(TransientOriginError, match="awaiting the last chunk"):
            await fetch(client, "a")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "bad response: not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "bad response: bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\n no colon\r\n\r\n", "bad response: malformed header field"),
        (b"HTTP/1.1 2\xb20 OK\r\n\r\n", "bad response: not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\n", "bad response: bad Content-Length"),
    ],
)
async def test_garbage_from_the_server_is_a_clear_transient_error(
    answer: bytes, reason: str
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()  # until the client hangs up

    async with raw_origin(garbage) as url, DownloadClient.open(url, FETCH) as client:
        with pytest.raises(TransientOriginError) as caught:
            await fetch(client, "a")
    assert reason in caught.value.reason


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await reader.read()

    fetch_config = replace(FETCH, read_timeout=0.3)
    async with raw_origin(silent) as url, DownloadClient.open(url, fetch_config) as client:
        with pytest.raises(TransientOriginError) as caught:
            await fetch(client, "a")
    assert caught.value.reason == "timed out: no data within fetch.read_timeout"


async def test_a_refused_connection_is_transient() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with DownloadClient.open(f"http://127.0.0.1:{port}", FETCH) as client:
        with pytest.raises(TransientOriginError, match="cannot connect"):
            await fetch(client, "a")


async def test_the_pool_holds_at_most_its_limit_of_connections() -> None:
    peers: list[object] = []
    async with aiohttp_origin(peers) as url, DownloadClient.open(url, FETCH) as client:
        results = await asyncio.gather(*(fetch(client, "blob") for _ in range(6)))
    assert all(data == BLOB for _, data in results)
    assert len(set(peers)) <= FETCH.concurrency


def test_bodies_on_uvloop_the_loop_processes_run() -> None:
    async def both() -> tuple[bytes, bytes]:
        async with aiohttp_origin([]) as url, DownloadClient.open(url, FETCH) as client:
            return (await fetch(client, "blob"))[1], (await fetch(client, "chunked"))[1]

    assert run_async(both()) == (BLOB, BLOB)


async def test_an_https_origin_is_verified_against_the_system_store(tmp_path: Path) -> None:
    """A self-signed certificate: the handshake happens, and the client refuses it."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    openssl = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
    ]
    subject = ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run([*openssl, *subject], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    async with DownloadClient.open(f"https://127.0.0.1:{port}", FETCH) as client:
        with pytest.raises(TransientOriginError) as caught:
            await fetch(client, "a")
    server.close()
    assert caught.value.reason == "TLS: CERTIFICATE_VERIFY_FAILED"


async def test_a_connection_the_server_will_close_is_not_kept() -> None:
    connections = 0

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()  # the server would take another request: the client must not ask

    async with raw_origin(closing) as url, DownloadClient.open(url, FETCH) as client:
        assert [(await fetch(client, p))[1] for p in "ab"] == [b"ok", b"ok"]
    assert connections == 2


async def test_small_bodies_are_read_into_small_buffers_large_ones_into_large() -> None:
    peers: list[object] = []
    async with aiohttp_origin(peers) as url, DownloadClient.open(url, FETCH) as client:
        for _ in range(20):  # 40 KB through one connection: its small buffer is reused
            assert (await fetch(client, "small"))[1] == BLOB[:2000]
        assert client.idle_buffer_bytes() == SMALL_READ
        assert (await fetch(client, "blob"))[1] == BLOB
        assert (await fetch(client, "chunked"))[1] == BLOB
        assert client.idle_buffer_bytes() == READ_SIZE
        assert (await fetch(client, "small"))[1] == BLOB[:2000]
    assert len(set(peers)) == 1


async def test_without_keep_alive_idle_connections_close_and_each_closes_at_its_end() -> None:
    peers: list[object] = []
    async with aiohttp_origin(peers) as url, DownloadClient.open(url, FETCH) as client:
        await asyncio.gather(fetch(client, "small"), fetch(client, "blob"))
        assert client.idle_buffer_bytes() == SMALL_READ + READ_SIZE  # two kept alive
        client.keep_idle_connections(False)
        assert client.idle_buffer_bytes() == 0
        assert (await fetch(client, "blob"))[1] == BLOB
        assert client.idle_buffer_bytes() == 0
        client.keep_idle_connections(True)
        assert [(await fetch(client, "small"))[1] for _ in "ab"] == [BLOB[:2000]] * 2
        assert client.idle_buffer_bytes() == SMALL_READ
    assert len(set(peers)) == 4  # two, one after they closed, one kept alive for two requests


def test_a_read_buffer_is_reused_only_once_no_chunk_of_it_is_alive() -> None:
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    chunk = view[10:20]
    view.release()
    assert not buffer_unshared(buffer)  # the chunk still points into it
    del chunk
    assert buffer_unshared(buffer) and len(buffer) == READ_SIZE
    assert not buffer_unshared(bytearray(0))


async def test_polls_are_conditional_and_bounded_on_connections_of_their_own(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "blob").write_bytes(BLOB)
    with Nginx(root, tmp_path / "nginx") as nginx:
        async with OriginClient.open(nginx.url, FETCH) as origin:
            url = origin.path_url("blob")
            first = await origin.fetch_small(url, max_bytes=len(BLOB), now=0.0)
            assert origin.idle_buffer_bytes() == 0  # kept alive, without its 256 KiB buffer
            again = await origin.fetch_small(
                url,
                etag=first.etag,
                last_modified=first.last_modified,
                max_bytes=len(BLOB),
                now=0.0,
            )
            with pytest.raises(PermanentOriginError, match="index is 700000 bytes, over the limit"):
                await origin.fetch_small(url, max_bytes=len(BLOB) - 1, now=0.0, what="index")
            missing = origin.path_url("missing")
            with pytest.raises(PermanentOriginError, match="HTTP 404"):
                await origin.fetch_small(missing, max_bytes=len(BLOB), now=0.0)
    assert first.body == BLOB and first.etag and first.last_modified
    assert (again.body, again.etag) == (None, first.etag)  # 304: not modified
    async with aiohttp_origin([]) as base, OriginClient.open(base, FETCH) as origin:
        # chunked: no Content-Length to refuse early, so the limit is counted as it comes
        with pytest.raises(PermanentOriginError, match="body is over the limit 1000 bytes"):
            await origin.fetch_small(origin.path_url("chunked"), max_bytes=1000, now=0.0)
        moved = await origin.fetch_small(origin.path_url("moved"), max_bytes=len(BLOB), now=0.0)
    assert moved.body == BLOB


def test_a_remembered_origin_splits_every_url_as_a_full_parse_does() -> None:
    pool = ConnectionPool(
        limit=1, per_host=1, connect_timeout=1.0, read_timeout=1.0, user_agent="test"
    )
    urls = [
        "http://127.0.0.1:8080/v3.20/main/x86_64/a-1.0-r0.apk",
        "http://127.0.0.1:8080/v3.20/main/x86_64/b%2Bc-1.0-r0.apk",
        "http://127.0.0.1:8080/x?q=1",
        "http://127.0.0.1:8080/x?",
        "http://127.0.0.1:8080/x#frag",
        "http://127.0.0.1:8080/x\ty",
        "http://127.0.0.1:8080/x ",
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8080",
        "https://[::1]/a/b",
        "https://[::1]:8443/a/b",
        "http://EXAMPLE.org/a",
        "http://example.org:80/a",
        "http://example.org:99999/a",
        "ftp://example.org/a",
        "http:///a",
    ]
    for _round in range(2):  # the second round answers from the remembered origins
        for url in urls:
            try:
                expected: object = pool_split(url)
            except PermanentOriginError as error:
                expected = str(error)
            try:
                actual: object = pool._split(url)
            except PermanentOriginError as error:
                actual = str(error)
            assert actual == expected, url
    assert "http://127.0.0.1:8080" in pool._keys


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
PIPELINED = FetchConfig(
    concurrency=1, per_host=1, pipeline=4, connect_timeout=2.0, read_timeout=2.0
)


class LoggingNginx(Nginx):
    """nginx writing, per request: its connection, its number on it, pipelined or not, URI."""

    def config_template(self) -> str:
        log = 'log_format pipe "$connection $connection_requests $pipe $status $uri";'
        return CONFIG.replace("access_log off;", log + "\n    access_log {prefix}/access.log pipe;")


async def test_pipelined_requests_to_nginx_each_get_their_own_body(tmp_path: Path) -> None:
    """Correct bodies from a real server over one pipelined connection. Counted on our
    side: whether nginx logs a request as pipelined ($pipe) depends on its reads'
    timing (a fresh clone's run under load saw none)."""
    root = tmp_path / "root"
    root.mkdir()
    sizes = [700_000, 2_000, 90_000, 0, 300_000, 5, 1_500_000, 40_000]
    files = {f"f{n}": os.urandom(size) for n, size in enumerate(sizes)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    names = [*files, "missing", *reversed(files)]  # a 404 among them: its page is drained
    with LoggingNginx(root, tmp_path / "nginx") as nginx:
        async with DownloadClient.open(nginx.url, PIPELINED) as client:
            assert (await fetch(client, "f1"))[1] == files["f1"]  # the connection, proven
            results = await asyncio.gather(
                *(fetch(client, name) for name in names), return_exceptions=True
            )
            # the three behind the first at least: the connection is proven, the rest wait
            assert client.pipelined_requests() >= 3
        log = (nginx.prefix / "access.log").read_text().split("\n")
    for name, result in zip(names, results, strict=True):
        if name == "missing":
            assert isinstance(result, PermanentOriginError) and result.status == 404
        else:
            assert not isinstance(result, BaseException), result
            assert hashlib.sha256(result[1]).digest() == hashlib.sha256(files[name]).digest()
    entries = [line.split() for line in log if line]
    assert len(entries) == 1 + len(names)
    assert {entry[0] for entry in entries} == {entries[0][0]}  # one connection for all
    assert sorted(entry[4] for entry in entries[1:]) == sorted(f"/{name}" for name in names)


async def test_responses_that_share_a_segment_are_split_where_each_body_ends() -> None:
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    last = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend"
    connections = 0

    async def all_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(first)
        for _ in range(3):
            await read_request(reader)
        writer.write(first + chunked + empty[:20])  # the third head split across segments
        await writer.drain()
        writer.write(empty[20:] + last)
        await reader.read()

    config = replace(PIPELINED, pipeline=4)
    async with raw_origin(all_at_once) as url, DownloadClient.open(url, config) as client:
        assert (await fetch(client, "warm"))[1] == b"hello"
        results = await asyncio.gather(*(fetch(client, name) for name in "abcd"))
    assert [data for _, data in results] == [b"hello", b"abcde", b"", b"end"]
    assert connections == 1


@pytest.mark.parametrize(("page", "connections_used"), [(60_000, 1), (200_000, 2)])
async def test_a_response_given_up_is_drained_when_short_else_the_rest_go_elsewhere(
    page: int, connections_used: int
) -> None:
    """A 404's page (longer than one read) is read and dropped; a long one costs the
    connection, and the request pipelined behind it is sent again on a fresh one."""
    connections = 0

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for request in each_request(reader):
            if request.startswith(b"GET /gone "):
                head = f"HTTP/1.1 404 Not Found\r\nContent-Length: {page}\r\n\r\n".encode()
                writer.write(head + b"n" * page)
            else:
                writer.write(OK)
            await writer.drain()

    async with raw_origin(answers) as url, DownloadClient.open(url, PIPELINED) as client:
        assert (await fetch(client, "warm"))[1] == b"ok"
        gone, behind = await asyncio.gather(
            fetch(client, "gone"), fetch(client, "behind"), return_exceptions=True
        )
        assert isinstance(gone, PermanentOriginError) and gone.status == 404
        assert not isinstance(behind, BaseException) and behind[1] == b"ok"
        assert (await fetch(client, "after"))[1] == b"ok"
    assert connections == connections_used


async def test_requests_behind_a_response_that_ends_the_connection_are_sent_again() -> None:
    connections = 0

    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):  # the second request was pipelined: answered, then the end
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
        writer.close()

    async with raw_origin(one_then_close) as url, DownloadClient.open(url, PIPELINED) as client:
        assert (await fetch(client, "warm"))[1] == b"ok"
        results = await asyncio.gather(*(fetch(client, name) for name in "abc"))
    assert [data for _, data in results] == [b"ok"] * 3
    assert connections == 3  # warm + a, then b + c, then the one c was sent again on


async def test_a_server_that_drops_pipelined_requests_soon_gets_one_at_a_time() -> None:
    """It answers the first request of a read and hangs up: every request still
    succeeds, and after a few dozen drops nothing is pipelined to it any more."""
    dropped = 0

    async def no_pipelining(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dropped
        while True:
            data = await reader.read(65536)
            if not data:
                return
            writer.write(OK)
            await writer.drain()
            if data.count(b"GET ") > 1:
                dropped += data.count(b"GET ") - 1
                writer.close()
                return

    logs = LogCapture()
    async with (
        raw_origin(no_pipelining) as url,
        DownloadClient.open(url, PIPELINED, log=logs.logger()) as client,
    ):
        for _ in range(30):
            results = await asyncio.gather(*(fetch(client, str(n)) for n in range(30)))
            assert [data for _, data in results] == [b"ok"] * 30
    assert 0 < dropped <= 16 + 2 * PIPELINED.pipeline
    (given_up,) = logs.events("fetch.pipeline.given_up")  # told once, when it happened
    assert given_up["origin"] == url.rstrip("/") and given_up["level"] == "warning"


async def test_requests_waiting_for_a_new_connection_fill_its_pipeline_once_it_is_proven() -> None:
    """Five downloads, one connection: the first one's response lets the other four
    out at once (the server answers none of them before it has all four)."""

    async def four_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        for _ in range(4):
            await read_request(reader)
        writer.write(OK * 4)
        await writer.drain()
        await reader.read()

    async with raw_origin(four_at_once) as url, DownloadClient.open(url, PIPELINED) as client:
        results = await asyncio.gather(*(fetch(client, name) for name in "abcde"))
    assert [data for _, data in results] == [b"ok"] * 5


def test_a_head_is_read_byte_for_byte() -> None:
    head = parse_head(
        b"HTTP/1.0 206 Partial \xc4\r\n"
        b"Content-Length: 7, 7\r\n"
        b"X-Thing: one\r\n"
        b"x-thing:\ttwo \r\n"
        b'ETag: \xa0"v\xe9"\xa0\r\n'
        b"Connection: Keep-Alive"
    )
    assert (head.status, head.reason, head.http10, head.keep_alive) == (
        206,
        "Partial \xc4",
        True,
        True,
    )
    assert head.headers == {
        "content-length": "7",
        "x-thing": "one, two",
        "etag": '\xa0"v\xe9"\xa0',  # latin-1 text kept: only ASCII spaces are trimmed
        "connection": "Keep-Alive",
    }


def one_connection(
    receive_buffer: Callable[[], int | None],
    on_path: Callable[[PathSample], None] | None = None,
) -> ConnectionPool:
    """A pool of one connection to one host, pinned to what ``receive_buffer`` says."""
    return ConnectionPool(
        limit=1,
        per_host=1,
        connect_timeout=5.0,
        read_timeout=5.0,
        user_agent="test",
        receive_buffer=receive_buffer,
        on_path=on_path,
    )


@pytest.mark.parametrize("pinned", [False, True])
async def test_each_new_connection_reports_its_round_trip_and_window_once(pinned: bool) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        await reader.read()

    samples: list[PathSample] = []
    pool = one_connection(lambda: 64 * 1024 if pinned else None, on_path=samples.append)
    try:
        async with raw_origin(answer) as url:
            for _ in range(2):
                async with pool.get(f"{url}/a", {}) as response:
                    assert b"".join([bytes(c) async for c in response.body.chunks()]) == b"ok"
            (connection,) = [c for held in pool._idle.values() for c in held]
            assert connection.transport is not None
            sock = connection.transport.get_extra_info("socket")
            buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            window = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP)
    finally:
        pool.close()
    (sample,) = samples  # one connection, heard of once
    assert sample.pinned is pinned and sample.window == window
    assert 0 < sample.rtt < 0.01  # loopback: microseconds, even on a loaded machine
    if pinned:  # the kernel doubles a pinned buffer; the window fits in it
        assert buffer == 2 * 64 * 1024 and 0 < window <= buffer


@pytest.mark.parametrize("buffer", [None, 64 * 1024, MAX_RECEIVE_BUFFER])
async def test_a_pinned_connection_asks_for_segments_that_fit_its_buffer(
    buffer: int | None,
) -> None:
    """Loopback's 32-64 KiB segments in a 64 KiB buffer made the origin time out on
    segments that had arrived and send them again: the wire carried more than the
    limit let through. Pinned, the origin's sending MSS is an eighth of the buffer,
    and at most the largest the kernel accepts."""
    body = os.urandom(1 << 20)
    segments: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        segments.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await reader.read()

    pool = one_connection(lambda: buffer)
    try:
        async with raw_origin(answer) as url, pool.get(f"{url}/a", {}) as response:
            received = b"".join([bytes(c) async for c in response.body.chunks()])
    finally:
        pool.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    (segment,) = segments
    if buffer is None:  # loopback's own, as an origin on the same host would send
        assert segment >= 32 * 1024
    else:  # a cap the kernel refused would leave loopback's 32 KiB
        assert 1024 < segment <= limited_segment(buffer) < 32 * 1024


async def test_a_connection_pinned_to_an_earlier_budget_is_not_reused() -> None:
    """A rate limit that begins or changes, or the workers taking a share: connections
    opened under the old buffer close instead of serving again, so all buffers stay
    within what the budget gives now."""
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for _ in each_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    budget: list[int | None] = [None]
    pool = one_connection(lambda: budget[0])

    async def get(url: str) -> int:
        async with pool.get(f"{url}/a", {}) as response:
            assert b"".join([bytes(c) async for c in response.body.chunks()]) == b"ok"
        (connection,) = [c for held in pool._idle.values() for c in held]
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    try:
        async with raw_origin(answer) as url:
            await get(url)
            await get(url)
            assert connections == 1  # kept alive while the budget holds
            budget[0] = 64 * 1024  # a limit begins while the connection is idle
            assert await get(url) == 2 * 64 * 1024  # the kernel doubles what is asked
            assert connections == 2
            assert await get(url) == 2 * 64 * 1024
            budget[0] = 32 * 1024
            assert await get(url) == 2 * 32 * 1024
            assert connections == 3
            async with pool.get(f"{url}/a", {}) as response:
                budget[0] = None  # the limit ends while a response is in flight
                assert b"".join([bytes(c) async for c in response.body.chunks()]) == b"ok"
            assert not any(pool._idle.values())  # closed as its reader let it go
    finally:
        pool.close()
