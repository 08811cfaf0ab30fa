"""Whether an origin's index, or its latest-stable link, would take the mirror back. Pure.

The origin's Last-Modified orders an arch's indexes: mirror-status reads a
mirror's freshness from it, and fleet mode orders generations by it. An index
older than the one published comes from an origin server behind the others (a
load balancer's lagging backend, a stale cache), a restore from backup, or an
old index replayed: its signature is as valid as it ever was, so no client can
tell. Publishing it would take back the packages published since, and
alternate with the newer index for as long as the origin's servers disagree.
"""

from __future__ import annotations

import re

# An index dated this much later than when we published it came from an origin
# whose clock ran ahead: its date orders nothing (every index written once the
# clock was put right would look older).
CLOCK_AHEAD = 300.0
_STABLE_BRANCH = re.compile(r"v(\d+)\.(\d+)")


def goes_back(
    origin_mtime: float | None, published_mtime: float | None, published_at: float | None
) -> bool:
    """Is the origin's index older than the published one, by the origin's own dates?

    ``published_at`` is our clock when we recorded or published that index, a
    little after the origin wrote it. An unknown date orders nothing.
    """
    if origin_mtime is None or published_mtime is None:
        return False
    if published_at is not None and published_mtime > published_at + CLOCK_AHEAD:
        return False
    return origin_mtime < published_mtime


def branch_goes_back(target: str, current: str | None) -> bool:
    """Would ``latest-stable`` move from ``current`` to an older stable branch?

    Alpine's link only moves forward (v3.20 to v3.21); a link naming an older
    branch comes from an origin server behind the others, or a restore, and
    clients following it would be handed a downgrade of every package. Names
    that are not ``vX.Y`` order nothing.
    """
    new, old = _STABLE_BRANCH.fullmatch(target), _STABLE_BRANCH.fullmatch(current or "")
    if new is None or old is None:
        return False
    return (int(new[1]), int(new[2])) < (int(old[1]), int(old[2]))
