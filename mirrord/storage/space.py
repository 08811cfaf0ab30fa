"""Disk space before a pass: will what it writes fit, leaving ``storage.min_free``?

``shortfall`` is the decision (pure); ``free_bytes`` asks the filesystem.
Other syncs in progress count with what they still have to download, so two
arches starting together cannot both take the last gigabytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from mirrord.core.errors import StoreError


def shortfall(needed: int, free: int, reserve: int, others: int = 0) -> int:
    """Bytes missing for a pass that writes ``needed`` (0: it fits).

    ``free``: free bytes on the filesystem now; ``reserve``: what must stay
    free; ``others``: what syncs in progress will still write.
    """
    return max(0, needed + others - (free - reserve))


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem."""
    try:
        stats = os.statvfs(path)
    except OSError as error:
        raise StoreError(str(path), f"cannot read free space: {error.strerror}") from None
    return stats.f_bavail * stats.f_frsize
