"""The bucket's pure decisions, its credentials and its configuration section."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrord.core.config import S3Config
from mirrord.core.config.parse import load_config, parse_config
from mirrord.core.errors import ConfigError
from mirrord.core.model import ArchKey
from mirrord.publish.bucket import Credentials, expected_etag, load_credentials
from mirrord.publish.bucketplan import (
    Listed,
    Source,
    multipart_etag,
    part_ranges,
    plan_bucket,
    to_compare,
    unverified,
)
from mirrord.publish.etagcache import FILE_NAME, EtagCache
from mirrord.shell.daemon import Daemon, changed_keys
from tests.daemon_harness import daemon_config
from tests.helpers import Mirror, run_mirrord

P = "alpine/v3.20/main/x86_64/"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_part_ranges_cover_the_file_once() -> None:
    assert part_ranges(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert part_ranges(8, 4) == [(0, 4), (4, 4)]
    assert part_ranges(0, 4) == [(0, 0)]


def test_expected_etag_is_md5_or_md5_of_part_md5s(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = bytes(range(256)) * 40  # 10240 bytes
    path.write_bytes(data)
    assert expected_etag(path, len(data), threshold=20000, part_size=4096) == md5(data)
    parts = [data[0:4096], data[4096:8192], data[8192:]]
    digests = [hashlib.md5(p, usedforsecurity=False).digest() for p in parts]
    assert expected_etag(path, len(data), threshold=8192, part_size=4096) == (
        md5(b"".join(digests)) + "-3"
    )
    assert multipart_etag(digests).endswith("-3")


def test_plan_uploads_what_is_missing_or_different_and_the_index_last() -> None:
    files = [Source(P + "a.apk", "1" * 64, 10), Source(P + "b.apk", "2" * 64, 20)]
    files.append(Source(P + "c.apk", "3" * 64, 30))
    index = Source(P + "APKINDEX.tar.gz", "4" * 64, 5)
    listing = {
        P + "a.apk": Listed(P + "a.apk", 10, "etag-a"),  # right
        P + "b.apk": Listed(P + "b.apk", 20, "stale"),  # same size, other bytes
        P + "old.apk": Listed(P + "old.apk", 7, "x"),  # gone from index and tree
        P + "grace.apk": Listed(P + "grace.apk", 7, "y"),  # unlisted, the tree keeps it
        P + "APKINDEX.tar.gz": Listed(P + "APKINDEX.tar.gz", 5, "old-index"),
    }
    compare = to_compare([*files, index], listing)
    assert [s.key for s in compare] == [P + "a.apk", P + "b.apk", P + "APKINDEX.tar.gz"]
    etags = {P + "a.apk": "etag-a", P + "b.apk": "etag-b", P + "APKINDEX.tar.gz": "new-index"}

    plan = plan_bucket(files, index, listing, etags, in_tree={P + "grace.apk"})

    assert [s.key for s in plan.upload] == [P + "b.apk", P + "c.apk"]
    assert plan.index == index
    assert plan.delete == (P + "old.apk",)


def test_plan_of_a_bucket_that_is_current_is_empty() -> None:
    files = [Source(P + "a.apk", "1" * 64, 10)]
    index = Source(P + "APKINDEX.tar.gz", "4" * 64, 5)
    listing = {s.key: Listed(s.key, s.size, "e") for s in [*files, index]}
    plan = plan_bucket(files, index, listing, {s.key: "e" for s in listing.values()}, set())
    assert (plan.upload, plan.index, plan.delete) == ((), None, ())


def test_credentials_from_a_file_then_the_environment_and_the_secret_never_shown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "creds"
    path.write_text("[default]\naws_access_key_id = AK\naws_secret_access_key = SEKRIT\n")
    from_file = load_credentials(S3Config("http://s3", "b", credentials_file=path), {})
    assert from_file == Credentials("AK", "SEKRIT")
    assert "SEKRIT" not in repr(from_file)
    env = {"AWS_ACCESS_KEY_ID": "AK2", "AWS_SECRET_ACCESS_KEY": "S2"}
    assert load_credentials(S3Config("http://s3", "b"), env) == Credentials("AK2", "S2")
    with pytest.raises(ConfigError, match="no credentials"):
        load_credentials(S3Config("http://s3", "b"), {})
    path.write_text("[other]\n")
    with pytest.raises(ConfigError, match=r"s3\.credentials_file"):
        load_credentials(S3Config("http://s3", "b", credentials_file=path), {})


def base(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "origin": {"url": "http://127.0.0.1:1", "keys": str(tmp_path)},
        "repositories": [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
        "storage": {"path": str(tmp_path / "s")},
        "publish": {"path": str(tmp_path / "p")},
        **extra,
    }


def test_s3_section_parses_with_defaults_and_names_bad_keys(tmp_path: Path) -> None:
    assert parse_config(base(tmp_path)).s3 is None
    s3 = parse_config(
        base(tmp_path, s3={"endpoint": "http://127.0.0.1:8333/", "bucket": "m", "prefix": "/a/"})
    ).s3
    assert s3 == S3Config("http://127.0.0.1:8333", "m", prefix="a/")
    with pytest.raises(ConfigError, match=r"s3\.part_size: must be at least 5MiB"):
        parse_config(base(tmp_path, s3={"endpoint": "http://h", "bucket": "m", "part_size": "1MB"}))
    signed = {"endpoint": "http://h", "bucket": "m", "sign_payload": True}
    signing = S3Config("http://h", "m", sign_payload=True)
    assert parse_config(base(tmp_path, s3=signed)).s3 == signing
    with pytest.raises(ConfigError, match=r"s3\.sign_payload"):
        parse_config(base(tmp_path, s3={**signed, "sign_payload": "yes"}))
    with pytest.raises(ConfigError, match=r"s3\.bucket: missing"):
        parse_config(base(tmp_path, s3={"endpoint": "http://h"}))
    with pytest.raises(ConfigError, match=r"s3\.secret"):
        parse_config(base(tmp_path, s3={"endpoint": "http://h", "bucket": "m", "secret": "x"}))


def test_unverified_names_what_the_listing_does_not_show_as_sent() -> None:
    listing = {P + "a": Listed(P + "a", 1, "x"), P + "b": Listed(P + "b", 2, "other")}
    sent = {P + "a": (1, "x"), P + "b": (2, "y"), P + "c": (3, "z")}
    assert unverified(sent, listing) == [P + "b", P + "c"]


def test_etag_cache_remembers_per_upload_settings_and_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    sha = "ab" * 32
    EtagCache(path, 64, 16).add({(sha, 10): "0" * 32, ("cd" * 32, 99): "1" * 32 + "-7"})
    EtagCache(path, 32, 8).add({(sha, 10): "2" * 32})
    with path.open("a") as file:
        file.write(f"{'ef' * 32} 5 64 16 3333")  # torn by a crash
    assert EtagCache(path, 64, 16).load() == {(sha, 10): "0" * 32, ("cd" * 32, 99): "1" * 32 + "-7"}
    assert EtagCache(path, 32, 8).load() == {(sha, 10): "2" * 32}
    assert EtagCache(tmp_path / "none", 64, 16).load() == {}


def test_check_config_reads_the_bucket_credentials_without_showing_the_secret(
    tmp_path: Path, keys_dir: Path
) -> None:
    creds = tmp_path / "creds"
    s3 = {"endpoint": "http://127.0.0.1:9", "bucket": "mirror", "credentials_file": str(creds)}
    data = base(tmp_path, s3=s3)
    data["origin"]["keys"] = str(keys_dir)
    config_file = tmp_path / "mirrord.yaml"
    config_file.write_text(yaml.safe_dump(data))

    missing = run_mirrord("check-config", "--config", str(config_file))
    creds.write_text("[default]\naws_access_key_id = AKID\naws_secret_access_key = S3KR1T\n")
    present = run_mirrord("check-config", "--config", str(config_file))

    assert missing.returncode == 2
    assert "s3.credentials_file: cannot read it" in missing.stderr
    assert present.returncode == 0, present.stderr
    assert "bucket      mirror/ at http://127.0.0.1:9" in present.stdout
    assert "key AKID" in present.stdout
    assert "bodies      Content-MD5, not signed, over plain http" in present.stdout
    assert "S3KR1T" not in present.stdout + present.stderr
    config_file.write_text(yaml.safe_dump({**data, "s3": {**s3, "sign_payload": True}}))
    signing = run_mirrord("check-config", "--config", str(config_file))
    assert "bodies      Content-MD5 and signed" in signing.stdout, signing.stderr


async def test_the_daemon_refuses_to_start_without_bucket_credentials(mirror: Mirror) -> None:
    key = ArchKey("v3.20", "main", "x86_64")
    s3 = {"endpoint": "http://127.0.0.1:9", "bucket": "m", "credentials_file": "/nonexistent"}
    config_path = daemon_config(mirror, key, s3=s3)
    daemon = Daemon(load_config(config_path), mirror.logs.logger(), config_path=config_path)
    with pytest.raises(ConfigError, match=r"s3\.credentials_file"):
        await daemon.run()
    assert not (mirror.tmp / "published").exists()  # nothing started


def test_a_reload_that_adds_or_drops_the_s3_section_names_it(tmp_path: Path) -> None:
    without = parse_config(base(tmp_path))
    with_s3 = parse_config(base(tmp_path, s3={"endpoint": "http://h", "bucket": "m"}))
    assert changed_keys(without, with_s3) == ["s3"]
    assert changed_keys(with_s3, without) == ["s3"]
    other = parse_config(base(tmp_path, s3={"endpoint": "http://h", "bucket": "n"}))
    assert changed_keys(with_s3, other) == ["s3.bucket"]
