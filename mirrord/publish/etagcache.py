"""The ETag a stored object has in the bucket, remembered across restarts.

A stored object never changes (its key, a plain or package key, names its
bytes), so the ETag its
bytes get in the bucket depends only on them and on how they are uploaded
(``multipart_threshold``, ``part_size``). Remembering it saves reading every
published file again at each start to compare with the bucket's listing.
One line per object, appended: ``<key> <size> <threshold> <part_size> <etag>``.
A line lost in a crash costs one hash; a torn line is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

FILE_NAME = "bucket-etags"
_LINE = re.compile(r"^((?:apk:)?[0-9a-f]{64}) (\d+) (\d+) (\d+) ([0-9a-f]{32}(?:-\d+)?)$")

Key = tuple[str, int]  # (object key, size)


class EtagCache:
    def __init__(self, path: Path, threshold: int, part_size: int) -> None:
        self.path = path
        self._how = (threshold, part_size)

    def load(self) -> dict[Key, str]:
        """Blocking: the remembered ETags for the current upload settings."""
        found: dict[Key, str] = {}
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return found
        for line in text.splitlines():
            match = _LINE.match(line)
            if match and (int(match[3]), int(match[4])) == self._how:
                found[(match[1], int(match[2]))] = match[5]
        return found

    def add(self, entries: dict[Key, str]) -> None:
        """Blocking: append these (one write; nothing to flush for a cache)."""
        if not entries:
            return
        threshold, part_size = self._how
        lines = "".join(
            f"{sha256} {size} {threshold} {part_size} {etag}\n"
            for (sha256, size), etag in entries.items()
        )
        with self.path.open("a", encoding="ascii") as file:
            file.write(lines)
