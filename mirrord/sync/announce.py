"""What mirrord tells downstream mirrors after a publish, in Alpine's shape (pure).

Alpine's master announces a changed arch on ``rsync/<host>/<branch>/<arch>``
with the payload ``<branch>/<repo>/<arch>``; a T2 that runs mqtt-exec (or
mirrord's push trigger) subscribed to ``rsync/<host>/#`` understands exactly
that, so mirrord says the same under its own prefix. Events that wait for the
broker are kept once per directory: a T2 needs to hear that an arch changed,
not how many times.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mirrord.core.config import ANNOUNCE_PREFIX_ROOT
from mirrord.core.model import valid_segment
from mirrord.sync.feed import Published


@dataclass(frozen=True)
class Announcement:
    directory: str  # the published directory, "<branch>/<repo>/<arch>"
    topic: str
    payload: bytes


def default_prefix(fqdn: str) -> str:
    """``rsync/<this host>``, the shape of Alpine's ``rsync/rsync.alpinelinux.org``."""
    host = fqdn.strip().rstrip(".") or "localhost"
    return f"{ANNOUNCE_PREFIX_ROOT}/{host}"


def announcement(event: Published, prefix: str) -> Announcement | None:
    """The message for one published directory; None for a directory that is no arch."""
    segments = event.directory.split("/")
    if len(segments) != 3 or not all(valid_segment(s) for s in segments):
        return None
    branch, _repo, arch = segments
    return Announcement(event.directory, f"{prefix}/{branch}/{arch}", event.directory.encode())


class Pending:
    """Announcements not sent yet, oldest first, one per directory."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[str, Announcement] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, message: Announcement) -> bool:
        """Queue it; False when the directory was already waiting (nothing new to say)."""
        fresh = message.directory not in self._waiting
        self._waiting[message.directory] = message
        return fresh

    def directories(self) -> list[str]:
        return list(self._waiting)

    def first(self) -> Announcement:
        return next(iter(self._waiting.values()))

    def sent(self, message: Announcement) -> None:
        if self._waiting.get(message.directory) is message:
            del self._waiting[message.directory]
