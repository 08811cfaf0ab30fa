"""Fuzzing with hypothesis: every input gives a value or a project error, never another
exception or a hang (a deadline per example).

Targets: the APKINDEX parser (text, tar, gzip, signature layers) and the control
protocol. Derandomized so CI runs the same examples every time; no example
database is written.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrord.alpine.apkindex import IndexArchive, parse_entries, read_index_archive
from mirrord.alpine.signing import Keyring
from mirrord.alpine.tarlite import END_OF_ARCHIVE, build_member
from mirrord.core.errors import IndexRejectedError, ProtocolError, UnsafeIndexError
from mirrord.demo.repogen import SigningKey, build_index, build_package, index_text, simple_specs
from mirrord.fetch.httpstatus import parse_retry_after
from mirrord.shell.control.protocol import COMMANDS, MAX_LINE, Request, parse_request

FUZZ = settings(
    max_examples=600,
    deadline=2000,  # ms: a hang or a blow-up fails the example
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MAX_INDEX = 1 << 20
MAX_PACKAGE = 1 << 30

KEY = SigningKey.generate("mirrord-fuzz", bits=1024)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Keyring:
    directory: Path = tmp_path_factory.mktemp("keys")
    KEY.write_public(directory)
    return Keyring.load(directory)


VALID_TEXT = index_text(build_package(s, None) for s in simple_specs("f", 3)).encode()
VALID_INDEX = build_index([build_package(s, None) for s in simple_specs("f", 3)], KEY)

# Entries that look like an index's: each field plausible, hostile (paths, NUL, control
# characters, huge or non-ASCII numbers) or random; field lines shuffled, some dropped.
CHECKSUM = "Q1" + "A" * 27 + "="
# Everything str.isdigit() accepts (Arabic-Indic, fullwidth, superscript, circled ...).
DIGITS = st.sampled_from([chr(c) for c in range(0x110000) if chr(c).isdigit()])
UNICODE_DIGITS = st.text(DIGITS, min_size=1, max_size=3)
HOSTILE = st.sampled_from(
    ["", " ", "../../etc/passwd", "a/b", ".hidden", "a\0b", "a\tb", "x" * 300, "-1", "é"]
)


def mostly(valid: st.SearchStrategy[str], *odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Usually a plausible value (so parsing goes deep), one time in eight an odd one."""
    oddly = st.one_of(*odd)
    # (hypothesis favours 0 and the bounds: the odd roll is in the middle)
    return st.integers(0, 7).flatmap(lambda roll: oddly if roll == 3 else valid)


FIELDS: dict[str, st.SearchStrategy[str]] = {
    "C": mostly(st.just(CHECKSUM), st.just(CHECKSUM[:-1] + "A"), HOSTILE, st.text(max_size=32)),
    "P": mostly(st.from_regex(r"[a-z][a-z0-9+_.-]{0,20}", fullmatch=True), HOSTILE),
    "V": mostly(st.from_regex(r"[0-9][0-9a-z._-]{0,12}", fullmatch=True), HOSTILE),
    "S": st.one_of(st.integers(-5, 2**70).map(str), UNICODE_DIGITS, HOSTILE),
    "A": mostly(st.just("x86_64"), st.text(max_size=8)),
    "I": mostly(st.integers(0, 2**40).map(str), UNICODE_DIGITS),
    "T": st.text(max_size=40).map(lambda t: t.replace("\n", " ")),
}
ODD_LINE = st.builds(
    lambda f, v: f"{f}:{v}", st.sampled_from([*"CPVSmcD", "", "é", "\0", ":"]), st.text(max_size=12)
) | st.text(max_size=20)


KEEP = st.integers(0, 19).map(lambda roll: roll != 7)


@st.composite
def index_entry(draw: st.DrawFn) -> str:
    lines = [f"{name}:{draw(value)}" for name, value in FIELDS.items() if draw(KEEP)]
    if not draw(KEEP):
        lines.append(draw(ODD_LINE))
    return "\n".join(draw(st.permutations(lines))) + "\n"


INDEX_TEXT = st.lists(index_entry(), max_size=3).map(lambda entries: "\n".join(entries).encode())


def parses_or_refuses(text: bytes | bytearray) -> None:
    try:
        entries = parse_entries(text, MAX_PACKAGE)
    except IndexRejectedError:
        return
    assert isinstance(entries, tuple)
    for entry in entries:  # what it accepts is safe to use as a file name
        assert "/" not in entry.filename and not entry.filename.startswith(".")
        assert 0 <= entry.size <= MAX_PACKAGE


def reads_or_refuses(blob: bytes, keyring: Keyring, *, allow_untrusted: bool) -> None:
    try:
        archive = read_index_archive(
            blob,
            keyring,
            allow_untrusted=allow_untrusted,
            max_index_bytes=MAX_INDEX,
            max_package_bytes=MAX_PACKAGE,
        )
    except IndexRejectedError:
        return
    assert isinstance(archive, IndexArchive)
    if not allow_untrusted:
        assert archive.signer is not None and archive.signer in keyring


@FUZZ
@given(st.binary(max_size=2048))
def test_index_text_bytes(data: bytes) -> None:
    parses_or_refuses(data)


@FUZZ
@given(INDEX_TEXT)
def test_index_text_shaped_like_an_index(text: bytes) -> None:
    parses_or_refuses(text)


@FUZZ
@given(st.integers(0, len(VALID_TEXT) - 1), st.binary(min_size=1, max_size=8))
def test_index_text_with_bytes_overwritten(at: int, junk: bytes) -> None:
    mutated = bytearray(VALID_TEXT)
    mutated[at : at + len(junk)] = junk
    parses_or_refuses(mutated)


@FUZZ
@given(data=st.binary(max_size=4096), allow_untrusted=st.booleans())
def test_index_archive_random_bytes(data: bytes, allow_untrusted: bool, keyring: Keyring) -> None:
    reads_or_refuses(data, keyring, allow_untrusted=allow_untrusted)


@FUZZ
@given(text=INDEX_TEXT, allow_untrusted=st.booleans())
def test_index_archive_signed_over_fuzzed_text(
    text: bytes, allow_untrusted: bool, keyring: Keyring
) -> None:
    """A correctly signed index whose APKINDEX is fuzzed: the parser behind the signature."""
    reads_or_refuses(
        build_index([], KEY, text=text.decode("utf-8", "replace")),
        keyring,
        allow_untrusted=allow_untrusted,
    )


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(VALID_INDEX) - 1), st.integers(1, 255)), max_size=4
    ),
    keep=st.integers(0, len(VALID_INDEX)),
    allow_untrusted=st.booleans(),
)
def test_index_archive_with_bits_flipped_and_truncated(
    flips: list[tuple[int, int]], keep: int, allow_untrusted: bool, keyring: Keyring
) -> None:
    mutated = bytearray(VALID_INDEX)
    for at, mask in flips:
        mutated[at] ^= mask
    reads_or_refuses(bytes(mutated[:keep]), keyring, allow_untrusted=True)
    reads_or_refuses(bytes(mutated[:keep]), keyring, allow_untrusted=allow_untrusted)


@FUZZ
@given(
    members=st.lists(
        st.tuples(
            st.sampled_from(["APKINDEX", "DESCRIPTION", ".SIGN.RSA.x", "../APKINDEX", ""]),
            st.binary(max_size=300),
        ),
        max_size=3,
    ),
    at=st.integers(0, 2048),
    junk=st.binary(max_size=16),
)
def test_index_archive_with_a_fuzzed_tar(
    members: list[tuple[str, bytes]], at: int, junk: bytes, keyring: Keyring
) -> None:
    """Unsigned (allow_untrusted): the tar reader sees damaged headers, sizes and padding."""
    tar = bytearray(b"".join(build_member(name, data) for name, data in members) + END_OF_ARCHIVE)
    tar[at : at + len(junk)] = junk
    reads_or_refuses(gzip.compress(bytes(tar)), keyring, allow_untrusted=True)


# --- the control protocol ---------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ARG_NAMES = st.sampled_from(["arches", "arch", "snapshot", "value", "force", "repair", "x"])
ARGS = st.dictionaries(ARG_NAMES, JSON | st.sampled_from(["v3.20/main/x86_64", "a/b", "50MB/s"]))
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, "1", None, 1.0]),
        "id": JSON,
        "cmd": st.sampled_from(COMMANDS) | st.text(max_size=10) | JSON,
        "args": ARGS | JSON,
    },
)


def answers_or_refuses(line: bytes) -> None:
    try:
        request = parse_request(line)
    except ProtocolError as error:
        assert error.code in ("bad_request", "unknown_command", "unsupported_version")
        return
    assert isinstance(request, Request) and request.cmd in COMMANDS


@FUZZ
@given(st.binary(max_size=512))
def test_control_lines_of_random_bytes(line: bytes) -> None:
    answers_or_refuses(line)


@FUZZ
@given(REQUEST)
def test_control_requests_shaped_like_requests(data: dict[str, Any]) -> None:
    answers_or_refuses(json.dumps(data).encode())


@pytest.mark.parametrize(
    "line",
    [
        b"[" * (MAX_LINE - 1),  # nesting as deep as a line allows
        b'{"cmd": "sync", "args": {"arches": 5}}',
        b'{"cmd": "status", "id": ' + b"9" * 5000 + b"}",  # beyond int's digit limit
        b'{"cmd": "rate", "args": {"value": 1e999}}',
    ],
    ids=["deep", "arches-not-a-list", "huge-int", "infinite-rate"],
)
def test_control_lines_found_by_fuzzing(line: bytes) -> None:
    answers_or_refuses(line)


def test_digits_only_python_calls_digits_are_refused() -> None:
    """Found by the index fuzzing: str.isdigit() accepts "²", which int() and float() refuse."""
    text = f"C:{CHECKSUM}\nP:a\nV:1.0-r0\nS:²\n".encode()
    with pytest.raises(UnsafeIndexError, match="not a non-negative whole number"):
        parse_entries(text, MAX_PACKAGE)
    assert parse_retry_after("²", now=0.0) is None  # a hostile origin's Retry-After
    assert parse_retry_after("120", now=0.0) == 120.0


@pytest.mark.parametrize("value", [[], {}, ["50MB/s"], {"rate": 1}])
def test_a_rate_that_is_a_list_or_an_object_is_a_bad_request(value: Any) -> None:
    """Found by test_control_requests_shaped_like_requests: parse_rate called .strip()
    on whatever JSON gave it (AttributeError, a traceback)."""
    line = json.dumps({"v": 1, "id": 1, "cmd": "rate", "args": {"value": value}}).encode()
    with pytest.raises(ProtocolError) as refused:
        parse_request(line + b"\n")
    assert refused.value.code == "bad_request"
    assert "expected a rate such as 50MB/s" in str(refused.value)
