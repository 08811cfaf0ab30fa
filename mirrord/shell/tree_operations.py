"""The control commands for releases directories (``<branch>/releases/<arch>``).

``snapshots``, ``rollback``, ``publish --force``, ``sync`` and ``resume`` name
a releases directory as they name an arch; the package commands hand such a
name here. A rollback holds the directory (passes publish nothing there)
until ``sync`` or ``resume`` names it, as for an arch.
"""

from __future__ import annotations

from typing import Any

from mirrord.core.errors import ControlError
from mirrord.core.model import ArchKey
from mirrord.sync.releases import ReleaseMirror


def is_tree(key: ArchKey, configured_arches: list[ArchKey]) -> bool:
    """A ``<branch>/releases/<arch>`` name that is no configured package arch."""
    return key.repo == "releases" and key not in configured_arches


class TreeOperations:
    def __init__(self, releases: ReleaseMirror) -> None:
        self.releases = releases

    def known(self, keys: list[ArchKey]) -> list[str]:
        directories = [str(k) for k in keys]
        unknown = [d for d in directories if not self.releases.configured(d)]
        if unknown:
            raise ControlError("not_found", f"not configured: {', '.join(unknown)}")
        return directories

    async def snapshots(self, key: ArchKey) -> dict[str, Any]:
        (directory,) = self.known([key])
        releases = self.releases
        history = await releases.history_of(directory)
        current = await releases.current_snapshot(directory)
        return {
            "arch": directory,
            "directory": directory,
            "held": directory in releases.held,
            "snapshots": [
                {
                    "id": s.id,
                    "created_at": s.created_at,
                    "current": s.id == current,
                    "files": len(s.files),
                    "bytes": s.bytes,
                    "forced": s.forced,
                }
                for s in reversed(history)
            ],
        }

    async def rollback(self, key: ArchKey, snapshot_id: int) -> dict[str, Any]:
        (directory,) = self.known([key])
        snapshot = await self.releases.rollback(directory, snapshot_id)
        return {
            "arch": directory,
            "snapshot": snapshot.id,
            "held": True,
            "note": f"held: {directory} is not published from the origin until "
            f"'mirrord ctl resume {directory}' or 'sync {directory}'",
        }

    def sync(self, directories: list[str], *, force: bool = False) -> dict[str, str]:
        """Release the directories' holds and ask for a releases pass now."""
        for directory in directories:
            self.releases.release(directory)
        answer = self.releases.ask(directories if force else ())
        return {directory: answer for directory in directories}
