"""The S3 publish target against a real SeaweedFS on loopback.

A reader that loops "GET the index, then every object it lists" from the
bucket during 25 publishes; deletions that follow the tree's; and kill -9 of
a real ``mirrord sync`` in the middle of a multipart upload, then a restart
that finishes the bucket without sending again what it already holds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mirrord.alpine.apkindex import read_index_archive
from mirrord.alpine.apkpackage import check_package, digest_bytes
from mirrord.alpine.signing import Keyring
from mirrord.core.clock import FakeClock
from mirrord.core.config import Config, S3Config
from mirrord.core.crashpoints import ENV_VAR, CrashPoints
from mirrord.core.errors import ObjectStoreError
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import PackageSpec, simple_specs
from mirrord.publish.bucket import Bucket, load_credentials
from mirrord.shell.daemon import Daemon
from mirrord.sync.bucketmirror import RETRY_EVERY, open_bucket_mirror
from mirrord.sync.runtime import Runtime, open_runtime
from tests.daemon_harness import ctl, daemon_config, running_daemon, synced
from tests.helpers import Mirror, spawn_mirrord
from tests.reader import publish_while_reading
from tests.seaweed import SECRET_KEY, Seaweed

KEY = ArchKey("edge", "main", "x86_64")
PUBLISHES = 25
MiB = 1024 * 1024


def s3_section(seaweed: Seaweed, bucket: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": seaweed.endpoint,
        "bucket": bucket,
        "prefix": "alpine",
        "credentials_file": str(seaweed.credentials_file(tmp)),
        **extra,
    }


def bucket_keys(client: Any, bucket: str) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = (item["Size"], item["ETag"].strip('"'))
    return found


def getter(client: Any, bucket: str, prefix: str) -> Any:
    def fetch(relative: str) -> bytes | None:
        try:
            answer = client.get_object(Bucket=bucket, Key=prefix + relative)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        data: bytes = answer["Body"].read()
        return data

    return fetch


def follow(config: Config) -> Any:
    """The daemon's bucket service, beside the publishes of a test."""
    assert config.s3 is not None
    s3 = config.s3

    async def run(runtime: Runtime) -> None:
        subscription = runtime.feed.subscribe("bucket")
        async with open_bucket_mirror(runtime, s3, {}, CrashPoints()) as mirror:
            await mirror.run(subscription, lambda: [KEY])

    return run


def check_bucket(client: Any, bucket: str, prefix: str, keyring: Keyring) -> list[str]:
    """The index in the bucket verifies and every object it lists is intact: the names listed."""
    fetch = getter(client, bucket, prefix)
    index = fetch("APKINDEX.tar.gz")
    assert index is not None
    archive = read_index_archive(
        index, keyring, allow_untrusted=False, max_index_bytes=64 << 20, max_package_bytes=1 << 30
    )
    for entry in archive.entries:
        data = fetch(entry.filename)
        assert data is not None, entry.filename
        check_package(entry.ref(), digest_bytes(entry.filename, data))
    return [e.filename for e in archive.entries]


async def test_reader_never_sees_a_missing_or_wrong_object_in_the_bucket(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    specs = simple_specs("pkg", 40, payload=2500)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY, s3=s3_section(seaweed, bucket, mirror.tmp))
    client = seaweed.client()
    prefix = f"alpine/{KEY}/"

    stats = await publish_while_reading(
        mirror,
        config,
        KEY,
        specs,
        getter(client, bucket, "alpine/"),
        PUBLISHES,
        follower=follow(config),
    )

    assert stats.problems == []
    assert len(stats.indexes_seen) == PUBLISHES
    assert stats.files_checked >= PUBLISHES * 40
    listed = check_bucket(client, bucket, prefix, Keyring.load(mirror.keys))
    # The tree keeps unlisted files for publish.grace (an hour here): so does the bucket.
    tree = sorted(os.listdir(config.publish.path.joinpath(*KEY.parts)))
    assert sorted(k.removeprefix(prefix) for k in bucket_keys(client, bucket)) == tree
    assert set(listed) < set(tree)


async def test_the_bucket_deletes_what_the_tree_deleted_after_the_index(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    specs = simple_specs("pkg", 10, payload=1000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY, s3=s3_section(seaweed, bucket, mirror.tmp), publish={"grace": 0})
    client = seaweed.client()
    prefix = f"alpine/{KEY}/"
    keyring = Keyring.load(mirror.keys)
    first = await publish_while_reading(
        mirror, config, KEY, specs, getter(client, bucket, "alpine/"), 1, follower=follow(config)
    )
    assert first.problems == []
    assert sorted(check_bucket(client, bucket, prefix, keyring)) == sorted(
        s.filename for s in specs
    )
    dropped = specs[3].filename
    kept = [s for i, s in enumerate(specs) if i != 3]
    mirror.tree.put(KEY, kept)

    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        (result,) = await runtime.engine.run_pass()
        assert result.outcome == "published"
        assert config.s3 is not None
        async with open_bucket_mirror(runtime, config.s3, {}, CrashPoints()) as follower:
            done = await follower.sync(KEY)

    # With grace 0 the tree deleted the file at once; the bucket after its new index.
    assert done is not None
    assert (done.uploaded, done.kept, done.index, done.deleted) == (0, 9, True, 1)
    names = {k.removeprefix(prefix) for k in bucket_keys(client, bucket)}
    assert dropped not in names
    assert names == {s.filename for s in kept} | {"APKINDEX.tar.gz"}


def big_world() -> list[PackageSpec]:
    small = simple_specs("a-small", 8, payload=3000)
    big = [
        PackageSpec("m-big", "1.0-r0", payload=11 * MiB, seed=77),
        PackageSpec("n-big", "1.0-r0", payload=11 * MiB, seed=78),
    ]
    return [*small, *big, *simple_specs("z-small", 8, payload=3000, seed=5)]


async def run_sync(config_file: Path, crash_at: str | None) -> tuple[int, list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if crash_at:
        env[ENV_VAR] = crash_at
    process = await spawn_mirrord(
        "sync", "--config", str(config_file), "--log-format", "json", env=env, stdout=-1, stderr=-1
    )
    out, err = await process.communicate()
    assert SECRET_KEY.encode() not in out + err  # credentials are never logged
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert process.returncode is not None
    return process.returncode, lines


async def test_kill_during_a_multipart_upload_then_restart(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    specs = big_world()
    mirror.tree.put(KEY, specs)
    s3 = s3_section(
        seaweed, bucket, mirror.tmp, part_size="5MiB", multipart_threshold="5MiB", concurrency=1
    )
    config_file = mirror.config_file(KEY, s3=s3)
    client = seaweed.client()
    prefix = f"alpine/{KEY}/"

    code, _ = await run_sync(config_file, "bucket.after_part")

    assert code == -9
    before = bucket_keys(client, bucket)
    assert prefix + "APKINDEX.tar.gz" not in before  # the index goes last
    # One uploader, in index order: every small "a-" file, then one part of the first big one.
    assert sorted(before) == sorted(prefix + s.filename for s in specs[:8])
    (upload,) = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert upload["Key"] == prefix + specs[8].filename
    parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    held = len(parts.get("Parts", []))
    assert held == 1

    code, lines = await run_sync(config_file, None)

    assert code == 0, [line for line in lines if line.get("level") == "error"]
    (done,) = [line for line in lines if line["event"] == "bucket.sync.done"]
    assert done["kept"] == len(before)
    assert done["uploaded"] == len(specs) - len(before)
    assert done["parts_reused"] == held
    assert done["parts"] == 2 * 3 - held  # two 11 MiB files, three parts each
    after = bucket_keys(client, bucket)
    for key, (size, etag) in before.items():
        assert after[key] == (size, etag)
    listed = check_bucket(client, bucket, prefix, Keyring.load(mirror.keys))
    assert sorted(listed) == sorted(s.filename for s in specs)
    assert set(after) == {prefix + s.filename for s in specs} | {prefix + "APKINDEX.tar.gz"}
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    code, lines = await run_sync(config_file, None)  # a third run: nothing to do

    assert code == 0
    assert [line for line in lines if line["event"] == "bucket.sync.done"] == []
    assert bucket_keys(client, bucket) == after


async def test_the_daemon_mirrors_each_publish_and_a_rollback_into_the_bucket(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    first = simple_specs("pkg", 12, payload=1500)
    mirror.tree.put(KEY, first)
    config_path = daemon_config(mirror, KEY, s3=s3_section(seaweed, bucket, mirror.tmp))
    client = seaweed.client()
    prefix = f"alpine/{KEY}/"
    keyring = Keyring.load(mirror.keys)
    second = [*first[1:], *simple_specs("new", 3, payload=1500, seed=9)]  # under the guard

    async with running_daemon(mirror, config_path) as daemon, asyncio.timeout(60):
        await synced(daemon, 1, KEY)
        one = await ctl(daemon, "snapshots", arch=str(KEY))
        await wait_bucket(daemon, one["snapshots"][0]["id"])
        assert sorted(check_bucket(client, bucket, prefix, keyring)) == sorted(
            s.filename for s in first
        )
        mirror.tree.put(KEY, second)
        await ctl(daemon, "sync", arches=[str(KEY)])
        await synced(daemon, 2, KEY)
        two = await ctl(daemon, "snapshots", arch=str(KEY))
        assert len(two["snapshots"]) == 2
        await wait_bucket(daemon, max(s["id"] for s in two["snapshots"]))
        assert sorted(check_bucket(client, bucket, prefix, keyring)) == sorted(
            s.filename for s in second
        )
        first_id = min(s["id"] for s in two["snapshots"])
        await ctl(daemon, "rollback", arch=str(KEY), snapshot=first_id)
        await wait_bucket(daemon, first_id)
        assert sorted(check_bucket(client, bucket, prefix, keyring)) == sorted(
            s.filename for s in first
        )
        registry = daemon.metrics.registry
        labels = {"branch": KEY.branch, "repo": KEY.repo, "arch": KEY.arch, "outcome": "done"}
        done = registry.get_sample_value("mirrord_bucket_syncs_total", labels)
        assert done is not None and done >= 3  # two publishes and a rollback
        sent = registry.get_sample_value("mirrord_bucket_uploaded_bytes_total")
        held = sum(size for size, _ in bucket_keys(client, bucket).values())
        assert sent is not None and sent > held  # all it holds, and the index it replaced


async def wait_bucket(daemon: Daemon, snapshot_id: int) -> None:
    await daemon.bucket_opened.wait()
    assert daemon.bucket_mirror is not None
    await daemon.bucket_mirror.wait_synced(KEY, snapshot_id)


async def test_a_bucket_that_refuses_leaves_the_tree_published_and_no_secret_in_the_logs(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    specs = simple_specs("pkg", 5, payload=1000)
    mirror.tree.put(KEY, specs)
    wrong = mirror.tmp / "wrong-credentials"
    wrong.write_text(
        "[default]\naws_access_key_id = mirrordtest\naws_secret_access_key = Wr0ngS3cret\n"
    )
    s3 = {**s3_section(seaweed, bucket, mirror.tmp), "credentials_file": str(wrong)}
    config_file = mirror.config_file(KEY, s3=s3)
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    process = await spawn_mirrord(
        "sync", "--config", str(config_file), "--log-format", "json", env=env, stdout=-1, stderr=-1
    )
    out, err = await process.communicate()

    assert process.returncode == 1
    assert f"{KEY}: bucket: not brought up to date" in err.decode()
    assert b"Wr0ngS3cret" not in out + err
    (failed,) = [json.loads(x) for x in out.splitlines() if b'"bucket.sync.failed"' in x]
    assert "SignatureDoesNotMatch" in failed["error"] or "AccessDenied" in failed["error"]
    # the tree, the primary publish, is served regardless
    index = config_file.parent / "published" / KEY.branch / KEY.repo / KEY.arch / "APKINDEX.tar.gz"
    assert index.is_file()
    assert bucket_keys(seaweed.client(), bucket) == {}


async def test_a_failed_pass_is_tried_again_while_the_arch_stays_quiet(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    specs = simple_specs("pkg", 5, payload=1000)
    mirror.tree.put(KEY, specs)
    later = bucket[:50] + "-later"  # created only after the first pass failed
    config = mirror.config(KEY, s3=s3_section(seaweed, later, mirror.tmp))
    assert config.s3 is not None
    clock = FakeClock()
    async with (
        open_runtime(config, log=mirror.logs.logger(), clock=clock) as runtime,
        asyncio.timeout(60),
    ):
        (result,) = await runtime.engine.run_pass()
        assert result.outcome == "published"
        current = await runtime.db.call(runtime.db.current, str(KEY))
        assert current is not None
        async with (
            open_bucket_mirror(runtime, config.s3, {}, CrashPoints()) as follower,
            asyncio.TaskGroup() as group,
        ):
            following = group.create_task(
                follower.run(runtime.feed.subscribe("bucket"), lambda: [KEY])
            )
            await follower.wait_until(lambda: str(KEY) in follower.failed)
            await asyncio.to_thread(seaweed.create_bucket, later)
            clock.advance(RETRY_EVERY)  # no publish in between: the retry alone
            await follower.wait_synced(KEY, current[0].id)
            following.cancel()

    assert follower.failed == set()
    listed = check_bucket(seaweed.client(), later, f"alpine/{KEY}/", Keyring.load(mirror.keys))
    assert sorted(listed) == sorted(s.filename for s in specs)


@pytest.mark.parametrize("sign_payload", [False, True])
async def test_every_body_carries_its_md5_and_is_signed_only_when_asked(
    seaweed: Seaweed, bucket: str, tmp_path: Path, sign_payload: bool
) -> None:
    """Content-MD5 on every PUT and part; the body's SHA-256 in the signature only with
    ``sign_payload`` (otherwise botocore hashes each byte again over plain http)."""
    small, large = os.urandom(300_000), os.urandom(11 * MiB)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "large").write_bytes(large)
    config = S3Config(
        seaweed.endpoint,
        bucket,
        credentials_file=seaweed.credentials_file(tmp_path),
        multipart_threshold=10 * MiB,
        part_size=5 * MiB,
        sign_payload=sign_payload,
    )
    sent: list[tuple[str, str, str]] = []

    def record(request: Any, **_: Any) -> None:
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((headers["Content-MD5"], headers["X-Amz-Content-SHA256"], request.url))

    async with Bucket.open(config, load_credentials(config, {})) as store:
        store._client.meta.events.register("before-send.s3.PutObject", record)
        store._client.meta.events.register("before-send.s3.UploadPart", record)
        await store.put_file("small", tmp_path / "small", len(small))
        await store.put_file("large", tmp_path / "large", len(large))

    bodies = [small, large[: 5 * MiB], large[5 * MiB : 10 * MiB], large[10 * MiB :]]
    assert len(sent) == len(bodies)
    for (md5, payload, _), body in zip(sent, bodies, strict=True):
        assert md5 == base64.b64encode(hashlib.md5(body).digest()).decode()
        assert payload == (hashlib.sha256(body).hexdigest() if sign_payload else "UNSIGNED-PAYLOAD")
    fetch = getter(seaweed.client(), bucket, "")
    assert fetch("small") == small
    assert fetch("large") == large


async def test_a_body_unlike_its_md5_is_refused(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    """Unsigned, the body is guarded by its Content-MD5: other bytes are not stored."""
    config = S3Config(seaweed.endpoint, bucket, credentials_file=seaweed.credentials_file(tmp_path))
    body = os.urandom(100_000)
    async with Bucket.open(config, load_credentials(config, {})) as store:
        with pytest.raises(ObjectStoreError, match="BadDigest"):
            await store.put_bytes("wrong", body, hashlib.md5(body[1:]).digest())
        assert await store.get("wrong") is None


async def test_a_large_body_is_sent_whole_again_after_dropped_connections() -> None:
    """Large bodies go out as views of the bytes read (``s3session``). After connections
    dropped halfway through the body, the attempt that succeeds must still carry every
    byte: aiohttp sends the request again once by itself, then botocore's retry builds
    it anew from the original. The endpoint: a raw HTTP server on loopback that drops
    the first two PUTs halfway and stores the third."""
    body = bytearray(os.urandom(3 * MiB))
    dropped, received = 0, []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dropped
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        if dropped < 2:
            await reader.readexactly(length // 2)
            writer.transport.abort()
            dropped += 1
            return
        stored = await reader.readexactly(length)
        received.append(stored)
        etag = hashlib.md5(stored).hexdigest()
        writer.write(f'HTTP/1.1 200 OK\r\nETag: "{etag}"\r\nContent-Length: 0\r\n\r\n'.encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = S3Config(f"http://127.0.0.1:{port}", "any")
    credentials = load_credentials(config, {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    async with server, Bucket.open(config, credentials) as store:
        etag = await store.put_bytes("big", body)

    assert (dropped, received) == (2, [bytes(body)])
    assert etag == hashlib.md5(body).hexdigest()


async def test_an_upload_that_fails_fails_the_pass_with_its_own_error(
    mirror: Mirror, seaweed: Seaweed, bucket: str
) -> None:
    """One upload failing (here a stored object gone from under the tree) cancels the
    others and fails the bucket's pass with that object's error: one line, exit 1, no
    traceback; the tree stays published and the bucket gets no index."""
    specs = simple_specs("pkg", 6, payload=20_000)
    mirror.tree.put(KEY, specs)
    plain = mirror.config_file(KEY)
    first = await spawn_mirrord("sync", "--config", str(plain))
    assert await first.wait() == 0
    tree = plain.parent / "published" / KEY.branch / KEY.repo / KEY.arch
    victim = tree / specs[3].filename
    inode = victim.stat().st_ino
    (gone,) = [p for p in (plain.parent / "storage").rglob("*") if p.stat().st_ino == inode]
    gone.unlink()

    config_file = mirror.config_file(KEY, s3=s3_section(seaweed, bucket, mirror.tmp))
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    process = await spawn_mirrord(
        "sync", "--config", str(config_file), "--log-format", "json", env=env, stdout=-1, stderr=-1
    )
    out, err = await process.communicate()

    assert process.returncode == 1
    assert b"Traceback" not in err
    assert f"{KEY}: bucket: not brought up to date" in err.decode()
    (failed,) = [json.loads(x) for x in out.splitlines() if b'"bucket.sync.failed"' in x]
    assert failed["error"].endswith(
        f"{specs[3].filename}: cannot read the local file {gone}: No such file or directory"
    )
    assert (tree / "APKINDEX.tar.gz").is_file()
    assert f"alpine/{KEY}/APKINDEX.tar.gz" not in bucket_keys(seaweed.client(), bucket)
