"""A real browser in tests: headless Chromium (Debian's ``chromium``) and a DOM reader."""

from __future__ import annotations

import asyncio
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

LIMIT = 60.0  # seconds a browser run may take before the test fails instead of hanging


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: ./dev test installs Debian's chromium package")
    return found


async def run_chromium(profile: Path, *args: str) -> bytes:
    """One headless run (offline habits: no updates, no sync); its stdout."""
    process = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(LIMIT):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def dump_dom(url: str, profile: Path) -> str:
    """The DOM after the page has loaded, serialized by the browser."""
    return (await run_chromium(profile, "--dump-dom", url)).decode()


async def screenshot(url: str, profile: Path, path: Path) -> None:
    await run_chromium(profile, f"--screenshot={path}", "--window-size=1400,900", url)


Cell = tuple[str, str]  # (class attribute, text)


class _Tables(HTMLParser):
    """The rows of every table, by the table's class: each cell's class and text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[Cell]]] = {}
        self._table: list[list[Cell]] | None = None
        self._cell: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(found.get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag == "td" and self._table is not None:
            self._cell = (found.get("class") or "", [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            css, text = self._cell
            self._table[-1].append((css, " ".join("".join(text).split())))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1].append(data)


def table_rows(dom: str, css: str) -> list[list[Cell]]:
    """The body rows (header rows have no cells) of the table with class ``css``."""
    parser = _Tables()
    parser.feed(dom)
    return [row for row in parser.tables.get(css, []) if row]
