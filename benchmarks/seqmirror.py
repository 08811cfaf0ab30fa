"""A sequential Python mirror: the baseline the "10x" goal is held against.

What a plain single-threaded Python mirror script does, done well: one
keep-alive HTTP connection, each file streamed in 64 KiB chunks through
SHA-256 into a temporary file that is renamed into place. It compares the
digest with nothing and flushes nothing, like the other peers.

    python seqmirror.py BASE_URL LIST DEST    (LIST: one relative path per line)
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

CHUNK = 64 * 1024


def mirror(base_url: str, relatives: list[str], dest: Path) -> int:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname is None:
        raise SystemExit(f"seqmirror: only http:// URLs: {base_url}")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
    prefix = parts.path.rstrip("/")
    total = 0
    for relative in relatives:
        connection.request("GET", f"{prefix}/{relative}")
        response = connection.getresponse()
        if response.status != 200:
            raise SystemExit(f"seqmirror: {relative}: HTTP {response.status}")
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        with temp.open("wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                total += len(chunk)
        os.replace(temp, target)
    connection.close()
    return total


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        raise SystemExit(__doc__)
    relatives = Path(argv[2]).read_text().split()
    mirror(argv[1], relatives, Path(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
