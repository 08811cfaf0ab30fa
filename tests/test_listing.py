"""Directory listings captured from real lighttpd and nginx (tests/fixtures/listings)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mirrord.alpine.listing import Listing, parse_listing
from mirrord.core.errors import ListingFormatError

CAPTURED = Path(__file__).parent / "fixtures" / "listings"
WHEN = datetime(2024, 9, 6, 12, 34, 56, tzinfo=UTC)
FILES = {
    "alpine-minirootfs-3.20.3-x86_64.tar.gz": 1234567,
    "alpine-standard-3.20.3-x86_64.iso": 3000,
    "alpine-standard-3.20.3-x86_64.iso.sha256": 40,
    "we ird&<name>.txt": 3,
}
FORMATS = [
    ("lighttpd-{}.html", "lighttpd", False, True),
    ("nginx-{}.html", "nginx-html", True, False),
    ("nginx-{}.json", "nginx-json", True, True),
]


def _read(pattern: str, which: str) -> Listing:
    name = pattern.format(which)
    return parse_listing((CAPTURED / name).read_bytes(), name)


@pytest.mark.parametrize(("pattern", "fmt", "exact_size", "seconds"), FORMATS)
def test_releases_directory_from_a_real_server(
    pattern: str, fmt: str, exact_size: bool, seconds: bool
) -> None:
    listing = _read(pattern, "releases")
    assert listing.format == fmt
    assert listing.directories() == ["netboot"]
    files = listing.files()
    assert sorted(files) == sorted(FILES)
    for name, size in FILES.items():
        assert files[name].size == (size if exact_size else None)
        expected = WHEN if seconds else WHEN.replace(second=0)
        assert files[name].mtime == expected
    # The control character is refused, not dropped silently, and never a file.
    assert [(r.name, r.reason) for r in listing.refused] == [
        ("ctl\x01char", "contains a control character")
    ]


@pytest.mark.parametrize(("pattern", "fmt", "exact_size", "seconds"), FORMATS)
def test_top_level_lists_branches_symlink_and_mirrors_txt(
    pattern: str, fmt: str, exact_size: bool, seconds: bool
) -> None:
    listing = _read(pattern, "top")
    # Both servers show the latest-stable symlink as a directory: the listing
    # cannot tell a link, so the link target comes from elsewhere.
    assert listing.directories() == ["edge", "latest-stable", "v3.20"]
    assert list(listing.files()) == ["MIRRORS.txt"]
    assert listing.files()["MIRRORS.txt"].size == (10 if exact_size else None)
    assert listing.refused == ()


@pytest.mark.parametrize(
    ("pattern", "href", "name", "reason"),
    [
        ("lighttpd-{}.html", "..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "path separator"),
        ("lighttpd-{}.html", "a%2Fb", "a/b", "path separator"),
        ("lighttpd-{}.html", "/etc/passwd", "/etc/passwd", "path separator"),
        ("nginx-{}.html", "..", "..", "parent"),
        ("nginx-{}.html", "a%5Cb", "a\\b", "path separator"),
        ("nginx-{}.html", "x%0Ay", "x\ny", "control character"),
        ("nginx-{}.html", "%FF", "\udcff", "UTF-8"),
        ("lighttpd-{}.html", "x" * 256, "x" * 256, "longer than 255"),
    ],
)
def test_hostile_names_are_refused(pattern: str, href: str, name: str, reason: str) -> None:
    original = (CAPTURED / pattern.format("releases")).read_text()
    doctored = original.replace('href="we%20ird%26%3Cname%3E.txt"', f'href="{href}"')
    assert doctored != original
    listing = parse_listing(doctored.encode(), "doctored")
    refused = {r.name: r.reason for r in listing.refused}
    assert reason in refused[name]
    assert name not in listing.files()
    assert all("/" not in e.name and e.name not in (".", "..") for e in listing.entries)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('[{"name": "..", "type": "directory"}]', None),
        ('[{"name": "a/b", "type": "file", "size": 1}]', None),
        ('[{"name": "a", "type": "file", "size": -1}]', "not a byte count"),
        ('[{"name": "a", "type": "file"}]', "not a byte count"),
        ('[{"name": "a", "type": "file", "size": 1, "mtime": "yesterday"}]', "bad mtime"),
        ('{"name": "a"}', None),
        ("[{", "bad JSON"),
    ],
)
def test_hostile_or_broken_json(raw: str, reason: str | None) -> None:
    if raw.startswith('[{"name": "') and reason is None:
        listing = parse_listing(raw.encode())
        assert listing.entries == ()
        assert len(listing.refused) == 1
        return
    with pytest.raises(ListingFormatError, match=reason or "neither"):
        parse_listing(raw.encode())


def test_json_other_types_are_skipped_and_duplicates_refused() -> None:
    raw = (
        '[{"name":"s","type":"other"},{"name":"a","type":"file","size":1},'
        '{"name":"a","type":"file","size":2}]'
    )
    listing = parse_listing(raw.encode())
    assert [(e.name, e.size) for e in listing.entries] == [("a", 1)]
    assert [(r.name, r.reason) for r in listing.refused] == [("a", "listed twice")]


def test_not_a_listing() -> None:
    with pytest.raises(ListingFormatError, match="neither"):
        parse_listing(b"<html><body>Welcome to nginx!</body></html>")
    with pytest.raises(ListingFormatError, match="not UTF-8"):
        parse_listing(b"\xff\xfe<pre>")
