"""config/nginx-mirrord.conf, run by a real nginx over a published tree: headers, 304s, Range."""

from __future__ import annotations

import email.utils
import http.client

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from tests.helpers import Mirror
from tests.serving import ShippedNginx

KEY = ArchKey("v3.20", "main", "x86_64")
REVALIDATE = "public, max-age=60, must-revalidate"
IMMUTABLE = "public, max-age=31536000, immutable"


def request(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def test_the_shipped_nginx_config_serves_what_a_cdn_and_apk_need(mirror: Mirror) -> None:
    specs = simple_specs("pkg", 5, arch="x86_64", payload=5000)
    mirror.tree.put(KEY, specs)
    config = mirror.config(KEY)
    (result,) = await mirror.sync(config)
    assert result.outcome == "published", result.error
    root = config.publish.path
    releases = root / "v3.20" / "releases" / "x86_64"
    releases.mkdir(parents=True)
    (releases / "latest-releases.yaml").write_bytes(b"---\n- title: Mini root filesystem\n")
    (root.joinpath(*KEY.parts, ".mirrord-tmp-abc")).write_bytes(b"half-written")
    origin_index = mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz"
    package = mirror.tree.packages(KEY)[0]

    with ShippedNginx(root, mirror.tmp / "nginx") as nginx:
        index_path = f"/{KEY}/APKINDEX.tar.gz"
        status, headers, body = request(nginx.port, index_path)
        assert status == 200
        assert body == origin_index.read_bytes()
        last_modified = headers["last-modified"]
        served = email.utils.parsedate_to_datetime(last_modified).timestamp()
        assert served == int(origin_index.stat().st_mtime)  # the origin's, not publish time
        assert headers["cache-control"] == REVALIDATE
        assert headers["surrogate-key"] == f"apkindex {KEY}"
        etag = headers["etag"]
        assert etag.startswith('"')

        # Revalidation: 304 on either validator, still with its Cache-Control.
        for validator in ({"If-Modified-Since": last_modified}, {"If-None-Match": etag}):
            status, headers, body = request(nginx.port, index_path, validator)
            assert (status, body) == (304, b"")
            assert headers["cache-control"] == REVALIDATE
        # Exact dates only: a cache holding a newer index (before a rollback) gets the bytes.
        newer = email.utils.formatdate(served + 3600, usegmt=True)
        status, _, body = request(nginx.port, index_path, {"If-Modified-Since": newer})
        assert (status, body) == (200, origin_index.read_bytes())

        # Packages: long-lived, immutable, Range for resumed downloads.
        package_path = f"/{KEY}/{package.spec.filename}"
        status, headers, body = request(nginx.port, package_path)
        assert (status, body) == (200, package.data)
        assert headers["cache-control"] == IMMUTABLE
        assert headers["content-type"] == "application/octet-stream"
        status, headers, body = request(nginx.port, package_path, {"Range": "bytes=100-1099"})
        assert status == 206
        assert body == package.data[100:1100]
        assert headers["content-range"] == f"bytes 100-1099/{len(package.data)}"
        assert headers["cache-control"] == IMMUTABLE
        status, _, body = request(nginx.port, package_path, {"If-None-Match": headers["etag"]})
        assert (status, body) == (304, b"")

        # Release metadata revalidates; directory listings are on and short-lived.
        status, headers, body = request(nginx.port, "/v3.20/releases/x86_64/latest-releases.yaml")
        assert (status, headers["cache-control"]) == (200, REVALIDATE)
        assert body.startswith(b"---\n")
        status, headers, body = request(nginx.port, f"/{KEY}/")
        assert status == 200
        assert headers["cache-control"] == "public, max-age=300"
        assert b"APKINDEX.tar.gz" in body and package.spec.filename.encode() in body

        # A publish in progress is never served.
        status, _, _ = request(nginx.port, f"/{KEY}/.mirrord-tmp-abc")
        assert status == 404
