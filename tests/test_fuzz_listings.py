"""Fuzzing the releases trees' parsers: directory listings (lighttpd, nginx HTML and
JSON), ``latest-releases.yaml`` and ``.sha256``/``.sha512`` sidecars. Every input gives
a value or a project error, never another exception or a hang.

Seeds are listings captured from the real servers (tests/fixtures/listings) and a
yaml written by the releases generator; hypothesis flips, cuts and splices them.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mirrord.alpine.latestreleases import parse_latest_releases
from mirrord.alpine.listing import parse_listing
from mirrord.alpine.sidecars import parse_sidecar
from mirrord.core.errors import MirrordError
from mirrord.demo.releasegen import _yaml_entry, image_bytes
from tests.test_fuzz import FUZZ

LISTINGS = Path(__file__).parent / "fixtures" / "listings"
SEEDS = [p.read_bytes() for p in sorted(LISTINGS.iterdir()) if p.suffix in (".html", ".json")]
ISO = "alpine-virt-3.20.3-x86_64.iso"
IMAGE = image_bytes(ISO, 4096)
YAML = ("---\n" + _yaml_entry("v3.20", "x86_64", "3.20.3", "alpine-virt", ISO, IMAGE)).encode()
HOSTILE_NAMES = st.sampled_from(
    ["..", "../etc", "a/b", "a\\b", "\x00", "\x1b[31m", "x" * 300, "%2e%2e", "\udcff", ""]
)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with a byte flipped, cut short, or a slice replaced by other bytes."""
    position = st.integers(0, max(len(seed) - 1, 0))
    flip = st.tuples(position, st.integers(1, 255)).map(
        lambda p: seed[: p[0]] + bytes([seed[p[0]] ^ p[1]]) + seed[p[0] + 1 :]
    )
    cut = position.map(lambda n: seed[:n])
    splice = st.tuples(position, position, st.binary(max_size=64)).map(
        lambda p: seed[: min(p[:2])] + p[2] + seed[max(p[:2]) :]
    )
    return st.one_of(flip, cut, splice)


def project_error_or_value(call: object) -> None:
    assert callable(call)
    with contextlib.suppress(MirrordError):
        call()


@FUZZ
@given(st.one_of(st.binary(max_size=2048), st.sampled_from(SEEDS).flatmap(mutated)))
def test_a_listing_parses_or_is_refused(body: bytes) -> None:
    project_error_or_value(lambda: parse_listing(body, "fuzz"))


@FUZZ
@given(
    st.lists(
        st.fixed_dictionaries(
            {"name": st.one_of(HOSTILE_NAMES, st.text(max_size=20))},
            optional={
                "type": st.sampled_from(["file", "directory", "other", 3]),
                "size": st.one_of(st.integers(-5, 1 << 70), st.text(max_size=5), st.none()),
                "mtime": st.one_of(st.text(max_size=40), st.just("Mon, 01 Jan 2024 00:00:00 GMT")),
            },
        ),
        max_size=8,
    )
)
def test_an_nginx_json_listing_with_hostile_entries_parses_or_is_refused(
    entries: list[dict[str, object]],
) -> None:
    body = json.dumps(entries).encode()
    listing = None
    try:
        listing = parse_listing(body, "fuzz")
    except MirrordError:
        return
    for entry in listing.entries:  # what is kept is safe to use as a path
        assert entry.name not in ("", ".", "..") and "/" not in entry.name


def test_deeply_nested_listings_and_yaml_are_refused_not_crashed() -> None:
    for body in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000):
        project_error_or_value(lambda body=body: parse_listing(body, "fuzz"))
    for text in ("[" * 100_000, "- " * 50_000 + "x", "a: " * 50_000 + "b"):
        project_error_or_value(lambda text=text: parse_latest_releases(text, "fuzz.yaml"))


@FUZZ
@given(st.one_of(st.text(max_size=1024), mutated(YAML).map(lambda b: b.decode("utf-8", "replace"))))
def test_latest_releases_yaml_parses_or_is_refused(text: str) -> None:
    project_error_or_value(lambda: parse_latest_releases(text, "fuzz.yaml"))


@FUZZ
@given(
    st.binary(max_size=512),
    st.sampled_from(["sha256", "sha512"]),
    st.one_of(HOSTILE_NAMES, st.just(ISO)),
)
def test_a_sidecar_parses_or_is_refused(data: bytes, algorithm: str, target: str) -> None:
    project_error_or_value(lambda: parse_sidecar(data, "fuzz.sha256", algorithm, target))
