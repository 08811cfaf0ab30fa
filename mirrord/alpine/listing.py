"""Directory listings as origins serve them: lighttpd ``mod_dirlisting``, nginx ``autoindex``.

Pure parsing, no I/O. Three formats are read: lighttpd's HTML table (what
Alpine's master serves), nginx's ``autoindex`` HTML (``<pre>`` lines) and
nginx's ``autoindex_format json``. Every name is checked before anyone can
use it as a path: the parent link (``../``) is dropped, and a name that is
empty, ``.``/``..``, holds a ``/`` or ``\\``, a control character, or is longer
than a file name may be, is *refused*: kept out of the entries and reported,
so that one hostile entry cannot be written anywhere and is still visible.

Sizes are exact where the format gives them exactly (nginx); lighttpd prints
rounded sizes ("2.9K"), so its entries carry ``size=None``. Times are UTC as
the servers print them (lighttpd to the second, nginx HTML to the minute);
the HTTP ``Last-Modified`` of the file itself is what a mirror records.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from mirrord.core.errors import ListingFormatError

MAX_NAME_BYTES = 255


@dataclass(frozen=True, slots=True)
class ListingEntry:
    """One name in a directory: a file or a directory, with what the listing says of it."""

    name: str
    is_dir: bool
    size: int | None
    mtime: datetime | None


@dataclass(frozen=True, slots=True)
class RefusedEntry:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Listing:
    """A parsed listing: the usable entries (sorted by name) and the refused ones."""

    format: str  # "lighttpd", "nginx-html" or "nginx-json"
    entries: tuple[ListingEntry, ...]
    refused: tuple[RefusedEntry, ...]

    def files(self) -> dict[str, ListingEntry]:
        return {e.name: e for e in self.entries if not e.is_dir}

    def directories(self) -> list[str]:
        return [e.name for e in self.entries if e.is_dir]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one path component of the mirror, or None when it can."""
    if not name:
        return "empty name"
    if name in (".", ".."):
        return "names the directory itself or its parent"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        return "contains a control character"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


_LIGHTTPD_ROW = re.compile(
    r'<tr[^>]*><td class="n"><a href="(?P<href>[^"]*)">.*?</a>/?</td>'
    r'<td class="m">(?P<mtime>.*?)</td><td class="s">(?P<size>.*?)</td>'
    r'<td class="t">(?P<type>.*?)</td></tr>'
)
_NGINX_LINE = re.compile(
    r'^<a href="(?P<href>[^"]*)">.*?</a>\s+'
    r"(?P<mtime>\d{2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2})\s+(?P<size>-|\d+)\s*$"
)


def parse_listing(body: bytes, source: str = "listing") -> Listing:
    """Recognise the format of ``body`` and parse it; ListingFormatError if none fits."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ListingFormatError(source, f"not UTF-8 ({error.reason})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        return parse_nginx_json(text, source)
    if 'summary="Directory Listing"' in text or '<td class="n">' in text:
        return parse_lighttpd(text, source)
    if "<pre>" in text and "Index of" in text:
        return parse_nginx_html(text, source)
    raise ListingFormatError(source, "neither lighttpd mod_dirlisting nor nginx autoindex")


def parse_lighttpd(text: str, source: str = "listing") -> Listing:
    raw: list[tuple[str, bool, int | None, datetime | None]] = []
    for match in _LIGHTTPD_ROW.finditer(text):
        href = html.unescape(match["href"])
        is_dir = match["type"] == "Directory" or href.endswith("/")
        mtime = _parse_time(html.unescape(match["mtime"]).strip(), "%Y-%b-%d %H:%M:%S", source)
        raw.append((href, is_dir, None, mtime))
    if not raw and "<tbody>" not in text:
        raise ListingFormatError(source, "lighttpd listing without a table body")
    return _build("lighttpd", raw)


def parse_nginx_html(text: str, source: str = "listing") -> Listing:
    raw: list[tuple[str, bool, int | None, datetime | None]] = []
    for line in text.splitlines():
        match = _NGINX_LINE.match(line.split("<pre>")[-1])
        if match is None:
            continue
        href = html.unescape(match["href"])
        size = None if match["size"] == "-" else int(match["size"])
        mtime = _parse_time(match["mtime"], "%d-%b-%Y %H:%M", source)
        raw.append((href, href.endswith("/"), size, mtime))
    return _build("nginx-html", raw)


def parse_nginx_json(text: str, source: str = "listing") -> Listing:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise ListingFormatError(source, f"bad JSON: {error.msg} at {error.pos}") from None
    except RecursionError:  # nesting deeper than the decoder's stack
        raise ListingFormatError(source, "JSON nested too deeply") from None
    if not isinstance(items, list):
        raise ListingFormatError(source, "JSON listing is not an array")
    raw: list[tuple[str, bool, int | None, datetime | None]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ListingFormatError(source, f"JSON entry without a name: {item!r:.80}")
        kind = item.get("type")
        if kind not in ("file", "directory"):
            continue  # "other": sockets, devices; nothing a mirror carries
        size = item.get("size")
        if kind == "file" and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ListingFormatError(source, f"{item['name']!r}: size {size!r} is not a byte count")
        mtime = item.get("mtime")
        when = None
        if isinstance(mtime, str):
            try:
                when = parsedate_to_datetime(mtime).astimezone(UTC)
            except (TypeError, ValueError):
                raise ListingFormatError(source, f"bad mtime {mtime!r}") from None
        # Mark directories with a slash so _build treats every format alike.
        name = item["name"] + "/" if kind == "directory" else item["name"]
        raw.append((name, kind == "directory", size if kind == "file" else None, when))
    return _build("nginx-json", raw)


def _parse_time(value: str, pattern: str, source: str) -> datetime | None:
    if not value or value == "\xa0":
        return None
    try:
        return datetime.strptime(value, pattern).replace(tzinfo=UTC)
    except ValueError:
        raise ListingFormatError(source, f"bad time {value!r}") from None


def _build(fmt: str, raw: list[tuple[str, bool, int | None, datetime | None]]) -> Listing:
    entries: dict[str, ListingEntry] = {}
    refused: list[RefusedEntry] = []
    for href, is_dir, size, mtime in raw:
        if href == "../" and fmt != "nginx-json":
            continue  # the parent link every HTML listing starts with
        if href.startswith("?"):
            continue  # sort links
        name = unquote(href[:-1] if href.endswith("/") else href, errors="surrogateescape")
        problem = name_problem(name)
        if problem is None and name in entries:
            problem = "listed twice"
        if problem is not None:
            refused.append(RefusedEntry(name, problem))
            continue
        entries[name] = ListingEntry(name, is_dir, size, mtime)
    ordered = tuple(entries[n] for n in sorted(entries))
    return Listing(fmt, ordered, tuple(refused))
