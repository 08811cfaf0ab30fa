"""The content-addressed object store: ``objects/sha256/<ab>/<full hex>``.

Objects arrive as temporary files in ``tmp/`` (same filesystem), are made
read-only and renamed into place, and become durable in batches with one
``syncfs``. Blocking methods: call them from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mirrord.durable import Syncer, unlink_if_exists
from mirrord.errors import StoreError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
READ_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class Landing:
    """A verified temporary file and the object it becomes."""

    temp: Path
    sha256: str
    size: int


class ContentStore:
    def __init__(self, root: Path, syncer: Syncer | None = None) -> None:
        self.root = root
        self.objects = root / "objects" / "sha256"
        self.tmp = root / "tmp"
        self._syncer = syncer or Syncer()
        self._fanout_ready: set[str] = set()

    def prepare(self) -> int:
        """Create the layout and sweep temporary leftovers; returns how many were swept."""
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(str(self.root), f"cannot create the store: {error.strerror}") from None
        swept = 0
        for entry in os.scandir(self.tmp):
            if entry.is_file(follow_symlinks=False):
                unlink_if_exists(Path(entry.path))
                swept += 1
        return swept

    def object_path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise StoreError(sha256, "not a SHA-256 hex digest")
        return self.objects / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def temp_path(self, label: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._+-]", "_", label)[:120]
        return self.tmp / f"{os.getpid()}-{os.urandom(6).hex()}-{safe}"

    def land(self, landing: Landing) -> Path:
        """Rename a verified temp file into place (read-only). Not yet durable."""
        target = self.object_path(landing.sha256)
        fanout = landing.sha256[:2]
        if fanout not in self._fanout_ready:
            target.parent.mkdir(exist_ok=True)
            self._fanout_ready.add(fanout)
        if target.exists():
            # Same digest, same bytes: keep the existing inode, which may be
            # hard-linked into the published tree already.
            unlink_if_exists(landing.temp)
            return target
        os.chmod(landing.temp, 0o444)
        os.rename(landing.temp, target)
        return target

    def put_bytes(self, data: bytes) -> str:
        """Store small in-memory content (an index); returns its digest. Not yet durable."""
        sha256 = hashlib.sha256(data).hexdigest()
        if self.has(sha256):
            return sha256
        temp = self.temp_path("blob")
        with open(temp, "wb") as handle:
            handle.write(data)
        self.land(Landing(temp, sha256, len(data)))
        return sha256

    def read_bytes(self, sha256: str) -> bytes:
        return self.object_path(sha256).read_bytes()

    def sync(self) -> None:
        """Make every landed object durable (one syncfs for the whole batch)."""
        self._syncer.sync_filesystem(self.root)

    def hash_object(self, sha256: str) -> str | None:
        """Re-hash a stored object; None when it is missing."""
        digest = hashlib.sha256()
        try:
            with open(self.object_path(sha256), "rb") as handle:
                while block := handle.read(READ_BUFFER):
                    digest.update(block)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    def remove(self, sha256: str) -> bool:
        return unlink_if_exists(self.object_path(sha256))
