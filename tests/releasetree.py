"""A releases-tree test world: a generated origin tree served by real lighttpd or nginx."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mirrord.core.config import Config
from mirrord.core.config.parse import parse_config
from mirrord.sync.feed import Published
from mirrord.sync.releases import TreePass
from mirrord.sync.runtime import Runtime
from tests.helpers import config_dict
from tests.lighttpd import Lighttpd
from tests.nginx import CONFIG, Nginx, WebServer

SERVERS = ("lighttpd", "nginx-html", "nginx-json")


def releases_config(
    tmp: Path, url: str, keys: Path, releases: dict[str, Any], **publish: Any
) -> Config:
    """A runtime configuration with one package arch and these releases trees."""
    data = config_dict(
        tmp,
        url,
        keys,
        [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
        releases=releases,
        publish=publish,
    )
    return parse_config(data)


class NginxJson(Nginx):
    def config_template(self) -> str:
        return CONFIG.replace("autoindex on;", "autoindex on; autoindex_format json;")


@contextmanager
def listing_server(kind: str, root: Path, prefix: Path) -> Iterator[WebServer]:
    """``kind`` from SERVERS, serving ``root`` with its directory listings."""
    server: WebServer
    if kind == "lighttpd":
        server = Lighttpd(root, prefix)
    elif kind == "nginx-html":
        server = Nginx(root, prefix)
    else:
        server = NginxJson(root, prefix)
    with server:
        yield server


async def releases_pass(runtime: Runtime, events: list[Published] | None = None) -> TreePass:
    """One releases pass; the feed's announcements during it appended to ``events``."""
    subscription = runtime.feed.subscribe("test")
    try:
        result = await runtime.releases.run_pass()
    finally:
        runtime.feed.unsubscribe(subscription)
    while events is not None and not subscription.queue.empty():
        events.append(subscription.queue.get_nowait())
    return result


def tree_digests(root: Path, *, skip_hidden: bool = True) -> dict[str, str]:
    """relpath -> sha256 of every regular file under ``root`` (symlinks not followed)."""
    found: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
        for name in files:
            path = Path(directory, name)
            if path.is_symlink() or (skip_hidden and name.startswith(".")):
                continue
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def set_mtime(paths: Iterator[Path] | list[Path], when: float) -> None:
    for path in paths:
        os.utime(path, (when, when))
