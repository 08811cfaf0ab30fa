"""Named points where a test can make the process die as if by ``kill -9``.

The crash-safety tests set ``MIRRORD_CRASH_AT=<point>[,<point>...]`` on a real
``mirrord sync`` process; in production the set is empty and ``reach`` is a
set lookup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

ENV_VAR = "MIRRORD_CRASH_AT"

KNOWN_POINTS = frozenset(
    {
        "store.before_sync",
        "store.after_sync",
        "publish.after_links",
        "publish.before_index_rename",
        "publish.after_index_rename",
        "publish.after_record",
        "bucket.after_part",
        "releases.after_content",
    }
)


class CrashPoints:
    def __init__(self, points: frozenset[str] = frozenset()) -> None:
        unknown = points - KNOWN_POINTS
        if unknown:
            raise ValueError(f"unknown crash points: {', '.join(sorted(unknown))}")
        self._points = points

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CrashPoints:
        raw = environ.get(ENV_VAR, "")
        return cls(frozenset(p.strip() for p in raw.split(",") if p.strip()))

    def reach(self, point: str) -> None:
        if point in self._points:
            os.kill(os.getpid(), signal.SIGKILL)
