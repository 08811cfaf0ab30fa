"""The published tree as users get it: through a real nginx, during publishes."""

from __future__ import annotations

import asyncio
import email.utils
import urllib.error
import urllib.request

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from tests.helpers import Mirror
from tests.nginx import Nginx
from tests.reader import publish_while_reading

KEY = ArchKey("v3.20", "community", "aarch64")
PUBLISHES = 20


def http_get(url: str) -> tuple[bytes, dict[str, str]] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


async def test_nginx_serves_the_published_tree_consistently_during_publishes(
    mirror: Mirror,
) -> None:
    specs = simple_specs("pkg", 30, arch="aarch64", payload=4000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY)
    config.publish.path.mkdir(parents=True)
    with Nginx(config.publish.path, mirror.tmp / "nginx") as nginx:

        def fetch(relative: str) -> bytes | None:
            got = http_get(f"{nginx.url}/{relative}")
            return None if got is None else got[0]

        stats = await publish_while_reading(mirror, config, KEY, specs, fetch, PUBLISHES)

        # What nginx says about the index is what the origin said.
        got = await asyncio.to_thread(http_get, f"{nginx.url}/{KEY}/APKINDEX.tar.gz")
        assert got is not None
        body, headers = got
        origin_index = mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz"
        assert body == origin_index.read_bytes()
        served = email.utils.parsedate_to_datetime(headers["Last-Modified"]).timestamp()
        assert served == int(origin_index.stat().st_mtime)
        for package in mirror.tree.packages(KEY):
            fetched = await asyncio.to_thread(
                http_get, f"{nginx.url}/{KEY}/{package.spec.filename}"
            )
            assert fetched is not None and fetched[0] == package.data

    assert stats.problems == []
    assert len(stats.indexes_seen) == PUBLISHES
