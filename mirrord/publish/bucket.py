"""One S3-compatible bucket, through aiobotocore: list, upload and verify, delete.

Every upload sends Content-MD5 (the store refuses bytes that differ) and is
then verified by a HEAD: the size and ETag the store reports must be the
ones computed here. Bodies are not hashed into the signature as well unless
``s3.sign_payload`` says so: botocore does that on every plain-http request,
on the event loop, a SHA-256 pass over each byte that Content-MD5 already
guards (over https it never does, nor does rclone). Large files go up in
parts; an upload interrupted by a crash is resumed: parts the store already
holds with the right MD5 and size are kept, not sent again. Credentials come
from ``s3.credentials_file`` or the environment and are never logged
(``Credentials`` hides the secret). Errors of botocore and aiohttp become
``ObjectStoreError`` here.
"""

from __future__ import annotations

import asyncio
import base64
import configparser
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from mirrord.core.config import S3Config
from mirrord.core.errors import ConfigError, ObjectStoreError
from mirrord.publish.bucketplan import Listed, multipart, multipart_etag, part_ranges
from mirrord.publish.s3session import UncopiedBodySession

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

ENV_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - the variable's name, not a secret


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)


def load_credentials(config: S3Config, environ: Mapping[str, str]) -> Credentials:
    """From ``credentials_file`` (AWS's INI format, section ``[default]``), else the environment."""
    where = "s3.credentials_file"
    if config.credentials_file is not None:
        parser = configparser.ConfigParser()
        try:
            text = config.credentials_file.read_text(encoding="utf-8")
            parser.read_string(text)
            section = parser["default"]
            return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"])
        except OSError as error:
            raise ConfigError(where, f"cannot read it: {error.strerror or error}") from None
        except (configparser.Error, KeyError):
            raise ConfigError(
                where, "expected [default] with aws_access_key_id and aws_secret_access_key"
            ) from None
    if environ.get(ENV_KEY) and environ.get(ENV_SECRET):
        return Credentials(environ[ENV_KEY], environ[ENV_SECRET])
    raise ConfigError("s3", f"no credentials: set credentials_file, or {ENV_KEY} and {ENV_SECRET}")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _read_range(path: Path, offset: int, length: int) -> bytearray:
    """A bytearray, which botocore sends as it is (bytes it wraps in a BytesIO, and
    aiohttp then copies that whole and writes it out 64 KiB at a time)."""
    data, got = bytearray(length), 0
    with path.open("rb", buffering=0) as file, memoryview(data) as view:
        file.seek(offset)
        while got < length and (count := file.readinto(view[got:])):
            got += count
    if got != length:
        raise ObjectStoreError(str(path), f"read {got} bytes of {length}")
    return data


def _md5(data: bytes | bytearray) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _read_with_md5(path: Path, length: int, offset: int = 0) -> tuple[bytearray, bytes]:
    data = _read_range(path, offset, length)
    return data, _md5(data)


def expected_etag(path: Path, size: int, threshold: int, part_size: int) -> str:
    """The ETag the store reports for these bytes uploaded the way ``Bucket.put_file`` does."""
    if not multipart(size, threshold):
        return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    digests = [
        hashlib.md5(_read_range(path, offset, length), usedforsecurity=False).digest()
        for offset, length in part_ranges(size, part_size)
    ]
    return multipart_etag(digests)


@dataclass
class UploadCounts:
    objects: int = 0
    parts: int = 0
    parts_reused: int = 0


class Bucket:
    """Constructed by ``open``; every call maps its failures to ObjectStoreError."""

    def __init__(self, client: S3Client, config: S3Config) -> None:
        self._client = client
        self.config = config
        self.name = config.bucket
        self.counts = UploadCounts()
        self.after_part: Callable[[], None] = lambda: None  # a crash point for the tests

    @classmethod
    @asynccontextmanager
    async def open(cls, config: S3Config, credentials: Credentials) -> AsyncIterator[Bucket]:
        session = get_session()
        # Keys, sizes and ETags are what mirrord reads; botocore would parse every
        # timestamp of a listing with dateutil (~100 µs a key): they stay text.
        parsers = session.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=str)
        settings = AioConfig(
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=config.concurrency + 2,
            s3={"addressing_style": "path", "payload_signing_enabled": config.sign_payload},
            # Content-MD5 is sent and checked; botocore's own CRC32 of every body would be
            # a second pass over each byte for nothing.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            http_session_cls=UncopiedBodySession,
        )
        async with session.create_client(
            "s3",
            endpoint_url=config.endpoint,
            region_name=config.region,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            config=settings,
        ) as client:
            yield cls(cast("S3Client", client), config)

    @asynccontextmanager
    async def _mapped(self, key: str) -> AsyncIterator[None]:
        try:
            yield
        except ClientError as error:
            info = error.response.get("Error", {})
            raise ObjectStoreError(
                key, f"{info.get('Code', 'error')}: {info.get('Message', '')}".rstrip(": ")
            ) from None
        except (TimeoutError, BotoCoreError, aiohttp.ClientError) as error:
            raise ObjectStoreError(key, f"{type(error).__name__}: {error}") from None
        except OSError as error:
            local = f" {error.filename}" if error.filename else ""
            raise ObjectStoreError(
                key, f"cannot read the local file{local}: {error.strerror}"
            ) from None

    async def listing(self, prefix: str) -> dict[str, Listed]:
        listed: dict[str, Listed] = {}
        async with self._mapped(prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix
            )
            async for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    listed[key] = Listed(key, item["Size"], _unquote(item["ETag"]))
        return listed

    async def get(self, key: str) -> bytes | None:
        async with self._mapped(key):
            try:
                response = await self._client.get_object(Bucket=self.name, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

    async def put_bytes(
        self, key: str, data: bytes | bytearray, digest: bytes | None = None
    ) -> str:
        """One PUT; the ETag the store answers must be the MD5 sent. Returns it."""
        if digest is None:
            digest = await asyncio.to_thread(_md5, data)
        async with self._mapped(key):
            answer = await self._client.put_object(
                Bucket=self.name, Key=key, Body=data, ContentMD5=_b64(digest)
            )
        if _unquote(answer["ETag"]) != digest.hex():
            raise ObjectStoreError(
                key, f"the store answered ETag {answer['ETag']} for {digest.hex()}"
            )
        self.counts.objects += 1
        return digest.hex()

    async def put_verified(self, key: str, data: bytes) -> None:
        """``put_bytes``, then a HEAD: the size and ETag the store reports (for the index)."""
        etag = await self.put_bytes(key, data)
        async with self._mapped(key):
            head = await self._client.head_object(Bucket=self.name, Key=key)
        reported = (head["ContentLength"], _unquote(head["ETag"]))
        if reported != (len(data), etag):
            raise ObjectStoreError(
                key,
                f"the store reports size {reported[0]} ETag {reported[1]}, sent {len(data)} {etag}",
            )

    async def put_file(self, key: str, path: Path, size: int) -> str:
        """Upload; resumes an interrupted multipart upload. Returns the ETag the store answered."""
        if not multipart(size, self.config.multipart_threshold):
            async with self._mapped(key):
                data, digest = await asyncio.to_thread(_read_with_md5, path, size)
            return await self.put_bytes(key, data, digest)
        return await self._put_parts(key, path, size)

    async def _put_parts(self, key: str, path: Path, size: int) -> str:
        async with self._mapped(key):
            upload_id, held = await self._resumable(key)
            if upload_id is None:
                created = await self._client.create_multipart_upload(Bucket=self.name, Key=key)
                upload_id = created["UploadId"]
            digests: list[bytes] = []
            parts: list[CompletedPartTypeDef] = []
            for number, (offset, length) in enumerate(
                part_ranges(size, self.config.part_size), start=1
            ):
                data, digest = await asyncio.to_thread(_read_with_md5, path, length, offset)
                digests.append(digest)
                if held.get(number) == (digest.hex(), length):
                    self.counts.parts_reused += 1
                else:
                    answer = await self._client.upload_part(
                        Bucket=self.name,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ContentMD5=_b64(digest),
                    )
                    if _unquote(answer["ETag"]) != digest.hex():
                        raise ObjectStoreError(key, f"part {number}: the store reports another MD5")
                    self.counts.parts += 1
                    self.after_part()
                parts.append({"ETag": f'"{digest.hex()}"', "PartNumber": number})
            completed = await self._client.complete_multipart_upload(
                Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        etag = multipart_etag(digests)
        if _unquote(completed.get("ETag", "")) != etag:
            answered = completed.get("ETag")
            raise ObjectStoreError(key, f"the store answered ETag {answered} for {etag}")
        self.counts.objects += 1
        return etag

    async def _resumable(self, key: str) -> tuple[str | None, dict[int, tuple[str, int]]]:
        """The newest unfinished upload of this key and the parts it holds (MD5, size)."""
        answer = await self._client.list_multipart_uploads(Bucket=self.name, Prefix=key)
        uploads = [u for u in answer.get("Uploads", []) if u.get("Key") == key]
        if not uploads:
            return None, {}
        upload_id = uploads[-1]["UploadId"]
        held: dict[int, tuple[str, int]] = {}
        pages = self._client.get_paginator("list_parts").paginate(
            Bucket=self.name, Key=key, UploadId=upload_id
        )
        async for page in pages:
            for part in page.get("Parts", []):
                held[part["PartNumber"]] = (_unquote(part["ETag"]), part["Size"])
        return upload_id, held

    async def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            async with self._mapped(batch[0]):
                answer = await self._client.delete_objects(
                    Bucket=self.name,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            for error in answer.get("Errors", []):
                raise ObjectStoreError(error.get("Key", "?"), error.get("Message", "not deleted"))
