"""Sidecars, latest-releases.yaml, and the expectations they join into."""

from __future__ import annotations

import hashlib

import pytest

from mirrord.alpine.latestreleases import parse_latest_releases
from mirrord.alpine.sidecars import Expected, expectations, parse_sidecar, sidecar_of
from mirrord.core.errors import ChecksumFormatError, ChecksumMismatchError

ISO = b"fake iso bytes\n" * 100
SHA256 = hashlib.sha256(ISO).hexdigest()
SHA512 = hashlib.sha512(ISO).hexdigest()
NAME = "alpine-standard-3.20.3-x86_64.iso"

# The layout Alpine's release tooling writes (aports scripts/mkimg + release.sh):
# a YAML list, "---" first, one mapping per image, unquoted scalars.
YAML = f"""---
-
  title: "Standard"
  desc: "Alpine as it was intended.
    Just enough to get you started.
    Network connection is required."
  branch: v3.20
  arch: x86_64
  version: 3.20.3
  flavor: alpine-standard
  file: {NAME}
  iso: {NAME}
  date: 2024-09-06
  time: 07:25:18
  size: {len(ISO)}
  sha256: {SHA256}
  sha512: {SHA512}
"""


def test_real_layout_parses_every_scalar_as_written() -> None:
    (entry,) = parse_latest_releases(YAML, "y", branch="v3.20", arch="x86_64")
    assert (entry.file, entry.size, entry.sha256, entry.sha512) == (NAME, len(ISO), SHA256, SHA512)
    # YAML 1.1 would make these a date and the integer 26718: kept as strings.
    assert (entry.version, entry.date, entry.time) == ("3.20.3", "2024-09-06", "07:25:18")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("branch: v3.20", "branch: v3.19"), "branch v3.19, not v3.20"),
        (("arch: x86_64", "arch: aarch64"), "arch aarch64, not x86_64"),
        ((f"file: {NAME}", "file: ../../etc/passwd"), "path separator"),
        ((f"file: {NAME}", "file: .."), "parent"),
        ((f"size: {len(ISO)}", "size: -1"), "not a byte count"),
        ((f"sha256: {SHA256}", "sha256: 1234"), "not a hex digest"),
        ((f"sha256: {SHA256}", "sha256: "), "missing sha256"),
        (("branch: v3.20", "branch: '; rm -rf'"), "not edge or vX.Y"),
        (("---\n-\n", "---\nkey:\n"), "not a list"),
        (("---", "---\n["), "not YAML"),
    ],
)
def test_bad_yaml_entries_are_refused(change: tuple[str, str], message: str) -> None:
    text = YAML.replace(*change)
    assert text != YAML
    with pytest.raises(ChecksumFormatError, match=message):
        parse_latest_releases(text, "y", branch="v3.20", arch="x86_64")


def test_duplicate_file_in_yaml_is_refused() -> None:
    with pytest.raises(ChecksumFormatError, match="listed twice"):
        parse_latest_releases(YAML + YAML.removeprefix("---\n"), "y")


def test_empty_yaml_lists_nothing() -> None:
    assert parse_latest_releases("---\n", "y") == ()


def test_sidecars_in_sha256sum_and_binary_mode() -> None:
    assert sidecar_of(f"{NAME}.sha256") == (NAME, "sha256")
    assert sidecar_of(f"{NAME}.sha512") == (NAME, "sha512")
    assert sidecar_of(f"{NAME}.asc") is None
    assert sidecar_of(".sha256") is None
    assert parse_sidecar(f"{SHA256}  {NAME}\n".encode(), "s", "sha256", NAME) == SHA256
    assert parse_sidecar(f"{SHA512.upper()} *{NAME}\n".encode(), "s", "sha512", NAME) == SHA512
    assert parse_sidecar(f"{SHA256}\n".encode(), "s", "sha256", NAME) == SHA256


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (f"{SHA256}  other.iso\n", "no sha256 line"),
        (f"{SHA256[:-1]}  {NAME}\n", "not a sha256sum line"),
        (f"{SHA512}  {NAME}\n", "not a sha256sum line"),
        (f"{SHA256}  {NAME}\n{'0' * 64}  {NAME}\n", "two different"),
        ("", "no sha256 line"),
        ("x" * 70_000, "larger than"),
    ],
)
def test_bad_sidecars_are_refused(data: str, message: str) -> None:
    with pytest.raises(ChecksumFormatError, match=message):
        parse_sidecar(data.encode(), "s", "sha256", NAME)


def test_expectations_join_yaml_and_sidecars() -> None:
    releases = parse_latest_releases(YAML, "y")
    files = [NAME, f"{NAME}.sha256", "alpine-standard-3.20.2-x86_64.iso", "MIRRORS.txt"]
    old = "1" * 64
    sidecars = {NAME: {"sha256": SHA256}, "alpine-standard-3.20.2-x86_64.iso": {"sha256": old}}
    got = expectations("v3.20/releases/x86_64", files, sidecars, releases)
    assert got[NAME] == Expected(
        len(ISO), SHA256, SHA512, ("latest-releases.yaml", f"{NAME}.sha256")
    )
    # An older release the yaml no longer lists: its sidecar still binds it.
    assert got["alpine-standard-3.20.2-x86_64.iso"] == Expected(
        None, old, None, ("alpine-standard-3.20.2-x86_64.iso.sha256",)
    )
    assert not got["MIRRORS.txt"].verified
    assert not got[f"{NAME}.sha256"].verified


def test_a_sidecar_disagreeing_with_the_yaml_refuses_the_directory() -> None:
    releases = parse_latest_releases(YAML, "y")
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as caught:
        expectations("d", [NAME], {NAME: {"sha256": wrong}}, releases)
    assert (caught.value.expected, caught.value.actual) == (SHA256, wrong)
    assert caught.value.path == f"d/{NAME}"


def test_a_promise_for_a_missing_file_refuses_the_directory() -> None:
    releases = parse_latest_releases(YAML, "y")
    with pytest.raises(ChecksumFormatError, match=r"listed by latest-releases\.yaml but not"):
        expectations("d", [], {}, releases)
    with pytest.raises(ChecksumFormatError, match="listed by a sidecar but not"):
        expectations("d", [], {"x.iso": {"sha256": SHA256}}, ())
