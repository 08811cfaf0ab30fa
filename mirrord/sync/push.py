"""What a push message names: the configured arches it touches, or why it is ignored.

Alpine's master announces a changed arch with the payload
``<branch>/<repo>/<arch>`` (sometimes with a trailing newline) on topics such
as ``rsync/rsync.alpinelinux.org/...`` or
``rsync/dl-master.alpinelinux.org/<branch>/<arch>``. The payload decides; an
empty payload falls back to the levels after ``rsync/<host>/`` in the topic.
A shorter path is generous but exact: ``<branch>/<arch>`` (or
``<branch>/<repo>``) names every configured arch it matches, ``<branch>``
every configured arch of that branch. ``<branch>/releases/<arch>`` names
that releases directory when it is configured (and no package arch is
named so): it starts a releases pass. Nothing here does I/O: the listener
decides with these functions and does what they say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mirrord.core.model import ArchKey, valid_segment
from mirrord.sync.scheduler import Trigger

MAX_PAYLOAD_BYTES = 512  # a real payload is a few dozen bytes
MAX_TOPIC_CHARS = 512
RECONNECT_FIRST = 1.0  # seconds before the first reconnect attempt


class Ignored(StrEnum):
    """Why a message triggered nothing (the ``reason`` label)."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    MALFORMED = "malformed"
    NOT_CONFIGURED = "not_configured"


class PushOutcome(StrEnum):
    """What a message did (the ``outcome`` label)."""

    STARTED = "started"  # at least one arch syncs now
    QUEUED = "queued"  # every arch it names was busy (or paused): one more sync follows
    IGNORED = "ignored"


@dataclass(frozen=True)
class PushRoute:
    keys: tuple[ArchKey, ...]
    ignored: Ignored | None = None
    trees: tuple[str, ...] = ()  # releases directories: a releases pass


def _ignore(reason: Ignored) -> PushRoute:
    return PushRoute((), reason)


def _path_from_topic(topic: str) -> str:
    levels = topic.split("/")
    return "/".join(levels[2:]) if len(levels) > 2 and levels[0] == "rsync" else ""


def route_push(
    payload: bytes,
    topic: str,
    configured: Sequence[ArchKey],
    tree: Callable[[str], bool] = lambda _: False,
) -> PushRoute:
    """The configured arches (or releases directory) a message names, in configuration order.

    ``tree`` says whether a ``<branch>/releases/<arch>`` path is a configured
    releases directory.
    """
    if len(payload) > MAX_PAYLOAD_BYTES or len(topic) > MAX_TOPIC_CHARS:
        return _ignore(Ignored.TOO_LARGE)
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return _ignore(Ignored.NOT_UTF8)
    path = (text or _path_from_topic(topic)).strip("/")
    segments = path.split("/")
    if not path or len(segments) > 3 or not all(valid_segment(s) for s in segments):
        return _ignore(Ignored.MALFORMED)
    keys = tuple(key for key in configured if _names(segments, key))
    if keys:
        return PushRoute(keys)
    if len(segments) == 3 and segments[1] == "releases" and tree(path):
        return PushRoute((), trees=(path,))
    return _ignore(Ignored.NOT_CONFIGURED)


def _names(segments: list[str], key: ArchKey) -> bool:
    match segments:
        case [branch, repo, arch]:
            return key == ArchKey(branch, repo, arch)
        case [branch, repo_or_arch]:
            return key.branch == branch and repo_or_arch in (key.repo, key.arch)
        case [branch]:
            return key.branch == branch
    return False


def push_outcome(triggers: Iterable[Trigger]) -> PushOutcome:
    """One outcome for a message, whatever number of arches it named."""
    found = list(triggers)
    if not found:
        return PushOutcome.IGNORED
    return PushOutcome.STARTED if Trigger.STARTED in found else PushOutcome.QUEUED


def reconnect_delay(failures: int, cap: float, jitter: float) -> float:
    """Seconds before the next attempt: doubling from RECONNECT_FIRST up to ``cap``.

    ``jitter`` in [0, 1) spreads the delay over its upper half, so that mirrors
    cut off together do not all come back to the broker in the same second.
    """
    delay = min(cap, RECONNECT_FIRST * 2.0 ** min(failures, 32))
    return delay * (0.5 + jitter / 2)
